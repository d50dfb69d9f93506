"""VLA-JEPA: model, latent world model, training, checkpoints and export (no ROS, no franky)."""
