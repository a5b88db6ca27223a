"""Simulation environments of vla-stack (gymnasium). Importing this package registers their ids."""

# ALOHA (gym-aloha scenes): vla_stack/AlohaTransferCube-v0, vla_stack/AlohaInsertion-v0
from components.envs.aloha import register_envs as _register_aloha

_register_aloha()
