"""Kinematics of the wheeled base: unicycle step, robot-frame transforms, pure pursuit, one set of limits."""
import math

import numpy as np
import pytest

from components.kinematics import (
    TURN_GAIN,
    WHEELED_BASE,
    bearing,
    from_robot_frame,
    point_along,
    project_on_polyline,
    pure_pursuit,
    to_robot_frame,
    unicycle_step,
    wrap_angle,
)


@pytest.mark.parametrize("frame, forward_after_left_turn", [("xz", (0.0, -1.0)), ("xy", (0.0, 1.0))])
def test_unicycle_step_turns_first_then_moves_along_the_new_heading(frame, forward_after_left_turn):
    x, y, yaw = unicycle_step((1.0, 2.0, 0.0), v=0.5, w=math.pi / 2, dt_s=1.0, frame=frame)
    assert yaw == pytest.approx(math.pi / 2)
    assert (x - 1.0, y - 2.0) == pytest.approx(tuple(0.5 * c for c in forward_after_left_turn), abs=1e-12)


def test_unicycle_step_wraps_yaw_only_when_asked():
    assert unicycle_step((0.0, 0.0, 3.0), 0.0, 1.0, 1.0)[2] == pytest.approx(4.0 - 2 * math.pi)
    assert unicycle_step((0.0, 0.0, 3.0), 0.0, 1.0, 1.0, wrap=False)[2] == pytest.approx(4.0)


def test_unicycle_step_is_how_the_wheeled_env_moves():
    import gymnasium as gym

    import components.envs  # noqa: F401

    env = gym.make("vla_stack/WheeledHallway-v0", image_size=(30, 40))
    try:
        _, info = env.reset(seed=0, options={"start_pose": (2.0, 0.0, 0.3)})
        pose = tuple(info["pose"])
        for v, w in [(0.5, 0.4), (0.7, -1.5), (0.0, 1.0), (0.3, 0.0)]:
            _, _, _, _, info = env.step(np.array([v, w], dtype=np.float32))
            v32, w32 = (float(np.float32(c)) for c in (v, w))
            pose = unicycle_step(pose, v32, w32, env.unwrapped.dt)
            assert not info["collided"]
            np.testing.assert_allclose(info["pose"], pose, atol=1e-9)
    finally:
        env.close()


@pytest.mark.parametrize("frame", ["xz", "xy"])
def test_robot_frame_transforms_round_trip(frame):
    rng = np.random.default_rng(0)
    for _ in range(20):
        pose = (*rng.normal(0, 5, 2), rng.uniform(-math.pi, math.pi))
        points = rng.normal(0, 3, (7, 2))
        np.testing.assert_allclose(from_robot_frame(to_robot_frame(points, pose, frame), pose, frame), points,
                                   atol=1e-12)
        np.testing.assert_allclose(to_robot_frame(from_robot_frame(points, pose, frame), pose, frame), points,
                                   atol=1e-12)
        # a single point [2] works as a batch of one
        np.testing.assert_allclose(to_robot_frame(points[0], pose, frame), to_robot_frame(points, pose, frame)[0])


def test_left_of_the_robot_is_positive_y_and_positive_bearing():
    # MiniWorld (x, z): at yaw 0 the robot looks along +x and its left is -z
    assert to_robot_frame(np.array([0.0, -1.0]), (0.0, 0.0, 0.0), "xz") == pytest.approx([0.0, 1.0])
    assert bearing(np.array([1.0, -1.0]), (0.0, 0.0, 0.0), "xz") == pytest.approx(math.pi / 4)
    assert bearing(np.array([1.0, 1.0]), (0.0, 0.0, 0.0), "xy") == pytest.approx(math.pi / 4)
    assert bearing(np.array([-1.0, 1e-9]), (0.0, 0.0, 0.0), "xy") == pytest.approx(math.pi)


def test_point_along_walks_the_arc_length_and_holds_at_the_end():
    path = [np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([1.0, 2.0])]
    np.testing.assert_allclose(point_along(path, 0.25), [0.25, 0.0])
    np.testing.assert_allclose(point_along(path, 1.5), [1.0, 0.5])  # over the zero-length segment
    np.testing.assert_allclose(point_along(path, 10.0), [1.0, 2.0])


def test_projection_on_a_polyline_is_the_arc_length_of_the_closest_point():
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    s, seg_len = project_on_polyline(path, np.array([1.3, 1.5]))
    assert s == pytest.approx(2.5) and seg_len == pytest.approx([1.0, 2.0])


@pytest.mark.parametrize("frame", ["xz", "xy"])
def test_pure_pursuit_turns_toward_a_target_on_the_left_with_positive_omega(frame):
    """A path that bends to the robot's left: the bearing (and so omega = gain * bearing) is positive,
    and driving the unicycle with it brings the robot to the end of the path."""
    left_end = from_robot_frame(np.array([[1.0, 0.0], [1.5, 1.0]]), (0.0, 0.0, 0.0), frame)
    path = [np.zeros(2), *left_end]
    pose, turned_left = (0.0, 0.0, 0.0), False
    _, alpha = pure_pursuit(path, 0.9, pose, frame=frame)
    assert alpha > 0 and WHEELED_BASE.clip(0.3, TURN_GAIN * alpha)[1] > 0
    closest = np.inf
    for _ in range(100):
        s, _ = project_on_polyline(np.array(path), np.array(pose[:2]))
        _, alpha = pure_pursuit(path, s, pose, frame=frame)
        pose = unicycle_step(pose, *WHEELED_BASE.clip(0.3, TURN_GAIN * alpha), WHEELED_BASE.dt_s, frame=frame)
        closest = min(closest, float(np.linalg.norm(np.array(pose[:2]) - path[-1])))
        if wrap_angle(pose[2]) > 0.5:
            turned_left = True
    assert closest < 0.1 and turned_left


def test_the_wheeled_base_limits_have_one_source():
    import gymnasium as gym

    import components.envs  # noqa: F401
    from planners.follower import FollowerConfig

    env = gym.make("vla_stack/WheeledHallway-v0", image_size=(30, 40))
    try:
        box = env.action_space
        np.testing.assert_array_equal(box.low, np.float32([WHEELED_BASE.v_min, -WHEELED_BASE.w_max]))
        np.testing.assert_array_equal(box.high, np.float32([WHEELED_BASE.v_max, WHEELED_BASE.w_max]))
        assert env.unwrapped.dt == WHEELED_BASE.dt_s and env.unwrapped.limits == WHEELED_BASE
    finally:
        env.close()
    assert FollowerConfig().limits == WHEELED_BASE
    assert WHEELED_BASE.clip(2.0, -9.0) == (WHEELED_BASE.v_max, -WHEELED_BASE.w_max)
