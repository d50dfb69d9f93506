"""Pure parts of collect/eval: instruction schedules, the success table with Wilson intervals, the paired table."""
import pytest

from vla_jepa_ros.core.stats import wilson_interval
from vla_jepa_ros.flywheel.sim_episodes import (EpisodeResult, episode_instructions, episode_table, paired_table,
                                                same_layout_instructions, success_table)
from vla_jepa_ros.sim.tasks import parse_instruction
from vla_jepa_ros.sim.world import SimWorldConfig, random_layout


def test_instructions_interleave_families_and_parse():
    ins = episode_instructions(3, seed=4)
    assert len(ins) == 6
    specs = [parse_instruction(i) for i in ins]
    assert all(specs) and [s.family for s in specs] == ["pick_up", "put_in_bowl"] * 3
    assert episode_instructions(3, seed=4) == ins and episode_instructions(3, seed=5) != ins
    with pytest.raises(ValueError, match="unknown task families"):
        episode_instructions(1, families=("juggle",))


def test_near_target_names_the_cube_nearest_the_robot_in_each_layout():
    config = SimWorldConfig()
    ins = episode_instructions(10, seed=9000, target="near")
    assert [parse_instruction(i).family for i in ins] == ["pick_up", "put_in_bowl"] * 10
    for k, text in enumerate(ins):  # episode k meets layout seed + k
        placements = random_layout(config, 9000 + k).placements
        named_x = placements[f"{parse_instruction(text).colour}_cube"][0]
        assert named_x == min(placements[f"{c}_cube"][0] for c in config.cube_colours), (k, text)
    same = same_layout_instructions(4, seed=9000, target="near")  # every family meets layouts seed.. too
    colours = [parse_instruction(text).colour for text in ins[:4]]
    assert all([parse_instruction(text).colour for text in same[f]] == colours for f in ("pick_up", "put_in_bowl"))
    with pytest.raises(ValueError, match="target 'edge'"):
        episode_instructions(1, target="edge")


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_success_table_per_family():
    def r(i, instruction, outcome):
        return EpisodeResult(i, i, instruction, f"t{i}", outcome, 10.0 + i, 12.0, 40)

    table = success_table([r(0, "pick up the red cube", "SUCCEEDED"), r(1, "put the red cube in the bowl", "FAILED"),
                           r(2, "pick up the blue cube", "FAILED"), r(3, "pick up the red cube", "SUCCEEDED")])
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "2/3" in lines["pick_up"] and "67 %" in lines["pick_up"]
    assert "0/1" in lines["put_in_bowl"] and "[0, 79] %" in lines["put_in_bowl"]
    assert "2/4" in lines["all"]


def test_episode_table_says_why_a_task_was_aborted():
    rows = [EpisodeResult(0, 7, "pick up the red cube", "t0", "ABORTED", 16.2, 20.0, 80,
                          message="robot fault: homing did not reach home_q_rad"),
            EpisodeResult(1, 8, "pick up the blue cube", "t1", "FAILED", 30.0, 36.0, 150, message="timed out after 30 s")]
    aborted, timed_out = episode_table(rows).splitlines()[1:]
    assert aborted.endswith("pick up the red cube  (robot fault: homing did not reach home_q_rad)")
    assert timed_out.endswith("pick up the blue cube")  # a timeout is what FAILED means here: no note


def test_same_layout_instructions_name_the_same_cube_for_every_family():
    per_family = same_layout_instructions(5, seed=4)
    assert list(per_family) == ["pick_up", "put_in_bowl"]
    picks, puts = ([parse_instruction(i) for i in per_family[f]] for f in ("pick_up", "put_in_bowl"))
    assert [s.family for s in picks] == ["pick_up"] * 5 and [s.family for s in puts] == ["put_in_bowl"] * 5
    assert [s.object_name for s in picks] == [s.object_name for s in puts]
    assert len({s.object_name for s in picks}) > 1  # colours vary over the layouts
    assert same_layout_instructions(5, seed=4) == per_family != same_layout_instructions(5, seed=5)
    with pytest.raises(ValueError, match="unknown task families"):
        same_layout_instructions(1, families=("juggle",))


def test_paired_table_compares_families_layout_by_layout():
    outcomes = {10: ("SUCCEEDED", "SUCCEEDED"), 11: ("SUCCEEDED", "FAILED"), 12: ("FAILED", "FAILED"),
                13: ("SUCCEEDED", "ABORTED")}
    rows = [EpisodeResult(0, seed, f"pick up the {c} cube", "t", pick, 9.0, 9.0, 9)
            for seed, (pick, _), c in zip(outcomes, outcomes.values(), ["red", "green", "blue", "red"])]
    rows += [EpisodeResult(0, seed, f"put the {c} cube in the bowl", "t", put, 9.0, 9.0, 9)
             for seed, (_, put), c in zip(outcomes, outcomes.values(), ["red", "green", "blue", "red"])]
    rows.append(EpisodeResult(0, 14, "pick up the red cube", "t", "SUCCEEDED", 9.0, 9.0, 9))  # no put run: left out
    table = paired_table(rows).splitlines()
    assert table[1].split() == ["10", "red", "S", "S"] and table[2].split() == ["11", "green", "S", "F"]
    assert table[4].split() == ["13", "red", "S", "F"] and not any(line.startswith("    14") for line in table)
    assert table[-1] == "4 layouts: both 1, only pick_up 2, only put_in_bowl 0, neither 1"


def test_eval_exit_code_follows_the_success_rate_threshold(capsys):
    from vla_jepa_ros.flywheel.commands import success_exit_code

    rows = [EpisodeResult(i, i, "pick up the red cube", f"t{i}", outcome, 10.0, 12.0, 40)
            for i, outcome in enumerate(["SUCCEEDED", "FAILED", "SUCCEEDED", "ABORTED"])]
    assert success_exit_code(rows, 0.5) == 0 and success_exit_code(rows, 0.0) == 0
    assert success_exit_code(rows, 0.51) == 1
    assert "success rate 0.500 (2/4) is below --min-success-rate 0.51" in capsys.readouterr().err


def test_episode_table_says_when_the_sim_put_the_arm_back():
    row = EpisodeResult(0, 7, "pick up the red cube", "t0", "ABORTED", 1.0, 2.0, 0,
                        message="robot fault: homing did not reach home_q_rad", arm_reset=True)
    assert episode_table([row]).splitlines()[1].endswith("[the sim put the arm back at home]")
