"""The waypoint follower: sign convention, limits, and agreement with the waypoint labels."""
import math

import numpy as np
import pytest

from planners.follower import FollowerConfig, WaypointFollower


def line(dx, dy, n=8):
    """n waypoints along the direction (dx, dy) per 0.5 s, headings along the line."""
    k = np.arange(1, n + 1)[:, None]
    yaw = math.atan2(dy, dx)
    return np.concatenate([k * np.array([dx, dy]), np.tile([math.cos(yaw), math.sin(yaw)], (n, 1))], axis=1)


def test_waypoints_straight_ahead_drive_straight():
    f = WaypointFollower()
    f.reset(line(0.3, 0.0))
    v, w = f.command()
    assert v == pytest.approx(0.6) and w == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("side, sign", [(0.15, 1.0), (-0.15, -1.0)])
def test_waypoints_to_the_left_turn_left_with_positive_omega(side, sign):
    f = WaypointFollower()
    f.reset(line(0.3, side))
    v, w = f.command()
    assert v > 0 and np.sign(w) == sign


def test_waypoints_behind_turn_in_place():
    f = WaypointFollower()
    f.reset(line(-0.3, 0.05))
    v, w = f.command()
    assert v == 0.0 and w > 0


def test_waypoints_bunched_at_the_robot_mean_stop():
    f = WaypointFollower()
    f.reset(np.tile([0.01, 0.0, 1.0, 0.0], (8, 1)))
    assert np.array_equal(f.command(), [0.0, 0.0])


def test_commands_never_exceed_the_limits():
    cfg = FollowerConfig(v_max=0.7, w_max=1.5)
    f = WaypointFollower(cfg)
    rng = np.random.default_rng(0)
    for _ in range(200):
        f.reset(rng.normal(0, 3, (8, 4)))
        for _ in range(10):
            v, w = f.command()
            assert 0.0 <= v <= cfg.v_max and abs(w) <= cfg.w_max


def test_dead_reckoning_reaches_the_first_waypoint_in_one_spacing():
    f = WaypointFollower()
    f.reset(line(0.3, 0.0))
    for _ in range(5):
        f.command()
    assert f.pose[:2] == pytest.approx([0.3, 0.0], abs=1e-6)


def test_bad_waypoints_are_rejected():
    with pytest.raises(ValueError, match=r"waypoints must be \[N, 2\+\]"):
        WaypointFollower().reset(np.zeros(4))


@pytest.fixture(scope="module")
def wheeled_env():
    import gymnasium as gym

    import components.envs  # noqa: F401
    env = gym.make("vla_stack/WheeledHallway-v0")
    yield env
    env.close()


@pytest.mark.parametrize("seed", [0, 3])  # the expert turns left (0) and right (3) in the first 2 s
def test_following_expert_labels_in_the_env_retraces_the_expert(wheeled_env, seed):
    """Waypoints made by ``future_waypoints`` from an expert run (stride 5 = 0.5 s), followed open loop
    in the wheeled env, end near where the expert was: the follower and the label convention agree
    (frame, axes, and omega > 0 = left)."""
    from components.envs.wheeled_expert import WheeledExpert, future_waypoints
    env = wheeled_env
    episode = WheeledExpert(env.unwrapped.plan, waypoints=8, waypoint_spacing_s=0.5).record(env, seed=seed)
    assert episode.steps >= 41
    poses = episode.frames["pose"]
    waypoints = future_waypoints(poses, 0, num=8, stride=5)
    np.testing.assert_array_equal(waypoints, episode.frames["action"][0])  # the label of frame 0
    env.reset(seed=seed, options={"start_pose": tuple(poses[0])})
    f = WaypointFollower(FollowerConfig(dt_s=env.unwrapped.dt))
    f.reset(waypoints)
    for _ in range(20):
        _, _, _, _, info = env.step(f.command())
    reached = future_waypoints(np.stack([poses[0], info["pose"]]), 0, num=1)[0]
    assert abs(waypoints[3, 3]) > 0.4  # the labels turn
    assert np.linalg.norm(reached[:2] - waypoints[3, :2]) < 0.2
    assert np.sign(reached[3]) == np.sign(waypoints[3, 3])  # and so does the robot, the same way
