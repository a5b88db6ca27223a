"""Simulation environments of vla-stack (gymnasium). Importing this package registers their ids."""

# ALOHA (gym-aloha scenes): vla_stack/AlohaTransferCube-v0, vla_stack/AlohaInsertion-v0
from components.envs.aloha import register_envs as _register_aloha

_register_aloha()

# Fetch (gymnasium-robotics): vla_stack/FetchReach-v0, vla_stack/FetchPush-v0, vla_stack/FetchPickAndPlace-v0
# Wheeled base (MiniWorld): vla_stack/Wheeled-v0, vla_stack/WheeledHallway-v0, vla_stack/WheeledNav-v0 (subgoal in the state)
# (registered by entry-point strings: the simulators are imported only when an env is made)
import gymnasium as _gym

for _id, _entry, _steps, _kw in (
    ("vla_stack/FetchReach-v0", "components.envs.fetch:make_fetch_reach", 50, {}),
    ("vla_stack/FetchPush-v0", "components.envs.fetch:make_fetch_push", 50, {}),
    ("vla_stack/FetchPickAndPlace-v0", "components.envs.fetch:make_fetch_pick_and_place", 50, {}),
    ("vla_stack/Wheeled-v0", "components.envs.wheeled:WheeledEnv", None, {}),
    ("vla_stack/WheeledHallway-v0", "components.envs.wheeled:WheeledEnv", None, {"floorplan": "hallway"}),
    ("vla_stack/WheeledNav-v0", "components.envs.wheeled:WheeledSubgoalEnv", None, {}),
):
    if _id not in _gym.registry:
        _gym.register(id=_id, entry_point=_entry, max_episode_steps=_steps, kwargs=_kw)

#: which embodiment spec (configs/embodiments/<name>.yaml) each environment's robot is
EMBODIMENT_OF = {
    "vla_stack/AlohaTransferCube-v0": "aloha",
    "vla_stack/AlohaInsertion-v0": "aloha",
    "vla_stack/FetchReach-v0": "fetch",
    "vla_stack/FetchPush-v0": "fetch",
    "vla_stack/FetchPickAndPlace-v0": "fetch",
    "vla_stack/Wheeled-v0": "wheeled",
    "vla_stack/WheeledHallway-v0": "wheeled",
    "vla_stack/WheeledNav-v0": "wheeled_nav",
}


def embodiment_of(env_id: str) -> str:
    if env_id not in EMBODIMENT_OF:
        raise KeyError(f"unknown environment '{env_id}'; known: {sorted(EMBODIMENT_OF)}")
    return EMBODIMENT_OF[env_id]
