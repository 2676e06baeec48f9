"""Shipped dreams: one ``<Dream-Id>.safetensors`` file each, with the recipe that rebuilt it.

Installed as ``learned_envs.checkpoints`` so that a non-editable install carries the files.
"""
