"""Episode recording: one rosbag2 MCAP bag per task episode (writer, recorder core, reader). No rclpy here."""
from .config import RecorderConfig, TopicSpec, parse_topic
from .reader import BagReadError, EpisodeReader, repair_episode
from .recorder import Recorder
from .writer import EpisodeWriter

__all__ = ["BagReadError", "EpisodeReader", "EpisodeWriter", "Recorder", "RecorderConfig", "TopicSpec",
           "parse_topic", "repair_episode"]
