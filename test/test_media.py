"""Episode media (captioned strips, videos) and the live progress line: pure functions on real frames and poses."""
import av
import cv2
import numpy as np

from vla_jepa_ros.flywheel.media import CAPTION_PX, save_strip, write_video
from vla_jepa_ros.sim.tasks import PICK_UP, PUT_IN_BOWL, SuccessConfig, TaskSpec, progress_text


def frames(n=25, h=48, w=64):
    return [np.full((h, w, 3), (10 * i) % 256, np.uint8) for i in range(n)]


def test_strip_has_a_title_and_each_frame_its_time(tmp_path):
    path = save_strip(frames(), [100.0 + 0.1 * i for i in range(25)], tmp_path / "s.png", title="pick up: SUCCEEDED")
    strip = cv2.imread(str(path))
    assert strip.shape == (48 + 2 * CAPTION_PX, 10 * 64, 3)  # title band + frames + a time band under each
    title_band, time_band = strip[:CAPTION_PX], strip[-CAPTION_PX:]
    assert (title_band > 128).any() and (time_band > 128).any()  # text drawn on the dark bands
    assert save_strip([], [], tmp_path / "none.png") is None


def test_video_holds_every_frame(tmp_path):
    path = write_video(tmp_path / "e.mp4", frames(n=25, h=47, w=63), fps=10)  # odd sides are padded
    with av.open(path) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 25 and decoded[0].shape == (48, 64, 3)
    assert [round(d[:47, :63].mean() / 10) for d in decoded] == [i % 26 for i in range(25)]  # each frame in place


def test_progress_says_what_the_success_check_sees():
    up = np.array([0.5, 0.0, 0.02 + 0.05]), np.array([0, 0, 0, 1.0])
    bowl = np.array([0.5, 0.2, 0.0]), np.array([0, 0, 0, 1.0])
    poses = {"red_cube": up, "bowl": bowl}
    assert progress_text(TaskSpec(PICK_UP, "red"), poses, SuccessConfig()) == \
        "the red cube 5 cm up (lifted at 8 cm)"
    assert progress_text(TaskSpec(PUT_IN_BOWL, "red"), poses) == "the red cube 5 cm up, 20 cm from the bowl's centre"
    assert progress_text(TaskSpec(PICK_UP, "blue"), poses) == "no blue_cube on the table"
