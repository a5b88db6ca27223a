"""follow_route's recovery: a collision block in decider mode first hands the segment to pure pursuit."""
import gymnasium as gym
import numpy as np

import components.envs  # noqa: F401
from planners.navigate import RouteConfig, StraightLineDecider, follow_route


class IntoTheWall(StraightLineDecider):
    """Waypoints far to the left of the subgoal for the first ``bad`` calls (into a wall from seed 0's
    start in three_rooms), then straight to it."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad, self.calls = bad, 0

    def waypoints(self, obs, subgoal):
        self.calls += 1
        g = np.asarray(subgoal, dtype=np.float64)
        if self.calls <= self.bad:
            g = np.array([-g[1], g[0]]) * 10.0
        return super().waypoints(obs, g)


def _drive(recovery_steps: int):
    env = gym.make("vla_stack/WheeledNav-v0", floorplan="three_rooms")
    try:
        obs, info = env.reset(seed=0)
        route = [p.copy() for p in env.unwrapped.route[1:]]
        cfg = RouteConfig(max_steps=400, max_collisions=10, recovery_steps=recovery_steps)
        return follow_route(env, route, obs, info, decider=IntoTheWall(bad=7), config=cfg)
    finally:
        env.close()


def test_a_collision_block_is_first_handed_to_pure_pursuit_once_per_segment():
    without = _drive(0)
    assert without.status == "blocked" and without.blocked.reason == "collisions" and without.recoveries == 0
    with_recovery = _drive(30)
    assert with_recovery.recoveries >= 1 and with_recovery.status == "reached" and with_recovery.success
    assert with_recovery.replans == 0 and 0 < with_recovery.recovery_steps <= 30 * with_recovery.recoveries
