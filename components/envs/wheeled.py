"""Wheeled base in buildings (MiniWorld, OpenGL headless) with floor plans from YAML.

``WheeledEnv`` (ids ``vla_stack/Wheeled-v0`` and ``vla_stack/WheeledHallway-v0``) builds the rooms of
a :class:`~components.envs.floorplan.FloorPlan` with MiniWorld's ``add_rect_room`` and joins them
with portals exactly like ``connect_rooms`` (the facing walls are taken from the floor plan instead
of being searched for).

* action ``Box([0, -1.5], [0.7, 1.5])`` = (v m/s, omega rad/s, positive = turn left), the limits of
  ``components.kinematics.WHEELED_BASE``, integrated at a fixed ``dt`` (0.1 s): heading first, then a
  straight move checked against walls with MiniWorld's ``intersect``; a blocked move slides along
  the wall if one axis is free (``info["collided"]``).
* observation ``{"images": {"front": uint8 (H, W, 3)}, "depth": float32 (H, W) metres,
  "state": float32 (2,) = last commanded (v, omega)}``; RGB and depth come from one render.
* info: ``pose`` = (x, z, yaw) float64 (MiniWorld frame: forward = (cos yaw, -sin yaw) in (x, z)),
  ``room`` (current room name, "" inside a door passage), ``goal_room``, ``instruction``,
  ``is_success``, ``collided``.
* **success**: the robot is inside the goal room (at least 0.3 m from its walls) and, when the goal room
  defines an explicit ``goal`` point in the YAML (e.g. the end of ``hallway``), within
  ``success_radius`` (1.0 m) of that point, which is marked by a small red box. The episode then
  terminates; it truncates itself after ``max_steps`` steps (kwarg ``max_steps``; default: the plan's
  ``max_episode_steps`` if the YAML sets one, else 400; 400 steps x 0.1 s x 0.7 m/s = 28 m at most).
  Use ``gym.make(..., max_steps=N)``: gymnasium keeps ``max_episode_steps=`` of ``gym.make`` for its
  own TimeLimit wrapper, which cannot lengthen the env's own limit.
* doors: a door the plan declares ``closed: true`` is built as a wall (no portal, no passage), so the
  robot cannot pass and the depth camera sees it. ``set_door(a, b, closed=...)`` changes a door
  during an episode (the static geometry is rebuilt; the robot and the goal box stay); a door does not
  close on a robot standing in it (``set_door`` returns False). ``closed_doors`` is the current state;
  every reset restores the plan's.
* reset: with ``goal_room=None`` the goal room is drawn from the seed; the start pose is uniform in
  another room (or, for a single-room plan, >= 3 m from the goal point) with a random heading.
  ``reset(options={"goal_room": ..., "start_room": ..., "start_pose": (x, z, yaw)})`` overrides;
  ``options={"look": Look}`` (``components.envs.looks``) sets the room textures, lighting and field of
  view of that episode (default: the fixed textures of each room index, MiniWorld's light and 60 deg).

MiniWorld keeps its static scene in an OpenGL display list; each env here allocates its own list so
that several envs can live in one process (``OwnDisplayList``, also used for MiniWorld's stock scenes by
``components.envs.scenes``). ``drive`` is the base's motion in any MiniWorld scene.
"""

from __future__ import annotations

import dataclasses
import math
import os

os.environ.setdefault("PYGLET_HEADLESS", "true")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402
from miniworld.entity import Box as BoxEntity  # noqa: E402
from miniworld.miniworld import MiniWorldEnv, Room  # noqa: E402
from pyglet.gl import (  # noqa: E402
    GL_COMPILE,
    glDeleteLists,
    glEndList,
    glGenLists,
    glNewList,
)

from components.envs.floorplan import FloorPlan, load_floorplan  # noqa: E402
from components.kinematics import WHEELED_BASE, turn  # noqa: E402


def _fast_texture_load(cls, tex_path):
    """Drop-in for ``miniworld.opengl.Texture.load``: same GL upload, decoded with PIL.

    MiniWorld asks pyglet 1.5 for RGBA bytes of an RGB PNG, a pure-Python regex conversion that takes
    ~3.5 s per texture (tens of seconds for a plan with many room textures). The uploaded pixels are
    identical (rows bottom-up, RGBA).
    """
    import pyglet
    from PIL import Image
    from pyglet.gl import (
        GL_GENERATE_MIPMAP_HINT,
        GL_LINEAR,
        GL_LINEAR_MIPMAP_LINEAR,
        GL_NICEST,
        GL_RGB,
        GL_RGBA,
        GL_TEXTURE_2D,
        GL_TEXTURE_MAG_FILTER,
        GL_TEXTURE_MIN_FILTER,
        GL_UNSIGNED_BYTE,
        glBindTexture,
        glEnable,
        glGenerateMipmap,
        glHint,
        glTexImage2D,
        glTexParameteri,
    )

    with Image.open(tex_path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    h, w = rgba.shape[:2]
    data = np.ascontiguousarray(rgba[::-1]).tobytes()  # pyglet/GL rows are bottom-up
    img = pyglet.image.ImageData(w, h, "RGBA", data, pitch=w * 4)
    tex = img.get_texture()
    glEnable(tex.target)
    glBindTexture(tex.target, tex.id)
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGB, w, h, 0, GL_RGBA, GL_UNSIGNED_BYTE, data)
    glHint(GL_GENERATE_MIPMAP_HINT, GL_NICEST)
    glGenerateMipmap(GL_TEXTURE_2D)
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_LINEAR)
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR_MIPMAP_LINEAR)
    glBindTexture(GL_TEXTURE_2D, 0)
    return tex


def _patch_texture_loader() -> None:
    from miniworld.opengl import Texture

    if getattr(Texture.load, "__name__", "") != "_fast_texture_load":
        Texture.load = classmethod(_fast_texture_load)


_patch_texture_loader()

WALL_MARGIN = 0.3  # "inside the goal room" means at least this far from its walls

_WALL_TEX = ["drywall", "stucco", "concrete", "brick_wall", "wood_planks", "marble", "cinder_blocks", "wood"]
_FLOOR_TEX = ["floor_tiles_bw", "wood", "concrete_tiles", "marble", "asphalt", "wood_planks", "rock", "cardboard"]


def _room_edges(axis: str, room_is_low_side: bool) -> int:
    """Edge index of an add_rect_room outline facing a neighbour.

    Outline order: 0 east (x = max_x), 1 north (z = min_z), 2 west (x = min_x), 3 south (z = max_z).
    """
    if axis == "x":
        return 0 if room_is_low_side else 2
    return 3 if room_is_low_side else 1


class OwnDisplayList:
    """Mixin for a ``MiniWorldEnv``: its own OpenGL display list (MiniWorld hard-codes list 1, shared by
    every env of a process), and a :class:`~components.envs.looks.Look` (``self.look``, None: the scene's
    own) applied where MiniWorld compiles the scene: lighting into the list, field of view on the agent."""

    look = None
    _list_id: int | None = None

    def _render_static(self):
        if self.look is not None:
            self.look.apply(self)
        if self._list_id is None:
            self._list_id = int(glGenLists(1))
        glDeleteLists(self._list_id, 1)
        glNewList(self._list_id, GL_COMPILE)
        glEndList()
        # Compile MiniWorld's static scene into our list by temporarily redirecting glNewList(1, ...).
        import miniworld.miniworld as mwmod

        orig_new, orig_del = mwmod.glNewList, mwmod.glDeleteLists
        list_id = self._list_id
        mwmod.glNewList = lambda _id, mode: orig_new(list_id, mode)
        mwmod.glDeleteLists = lambda _id, n: orig_del(list_id, n)
        try:
            super()._render_static()
        finally:
            mwmod.glNewList, mwmod.glDeleteLists = orig_new, orig_del

    def _render_world(self, frame_buffer, render_agent):
        import miniworld.miniworld as mwmod

        orig_call = mwmod.glCallList
        list_id = self._list_id
        mwmod.glCallList = lambda _id: orig_call(list_id)
        try:
            return super()._render_world(frame_buffer, render_agent)
        finally:
            mwmod.glCallList = orig_call



def observe_rgb_depth(env: MiniWorldEnv) -> tuple[np.ndarray, np.ndarray]:
    """One render of ``env``'s agent camera: RGB uint8 [H, W, 3] and depth float32 [H, W] metres."""
    rgb = env.render_obs(env.obs_fb)
    depth = np.clip(env.obs_fb.get_depth_map(0.04, 100.0)[..., 0], 0.0, 100.0).astype(np.float32)
    return np.ascontiguousarray(rgb, dtype=np.uint8), np.ascontiguousarray(depth)


def _try_move(env: MiniWorldEnv, delta: np.ndarray) -> bool:
    """Move the agent by delta (3-vector); slide along walls if blocked. Returns True on a collision."""
    agent = env.agent
    pos = agent.pos
    if not env.intersect(agent, pos + delta, agent.radius):
        agent.pos = pos + delta
        return False
    for d in (np.array([delta[0], 0.0, 0.0]), np.array([0.0, 0.0, delta[2]])):
        if abs(d[0]) + abs(d[2]) < 1e-9:
            continue
        if not env.intersect(agent, pos + d, agent.radius):
            agent.pos = pos + d
            return True
    return True


def drive(env: MiniWorldEnv, v: float, w: float, dt_s: float) -> bool:
    """One control step of the wheeled base's motion in any MiniWorld scene: heading first, then a straight
    move of ``v * dt_s`` in 5 cm sub-steps against the walls (sliding along a blocking one). True: collided."""
    env.agent.dir = turn(env.agent.dir, w, dt_s)
    collided = False
    dist = v * dt_s
    if dist > 0:
        n_sub = max(1, int(math.ceil(dist / 0.05)))
        step_vec = env.agent.dir_vec * (dist / n_sub)
        for _ in range(n_sub):
            collided |= _try_move(env, step_vec)
    return collided


class WheeledEnv(OwnDisplayList, MiniWorldEnv):
    """Go to a named room of a floor plan with a continuously controlled wheeled base."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        floorplan: str | Path | FloorPlan = "hallway",
        goal_room: str | None = None,
        start_room: str | None = None,
        image_size: tuple[int, int] = (60, 80),
        max_steps: int | None = None,
        dt: float = WHEELED_BASE.dt_s,
        success_radius: float = 1.0,
        min_start_distance: float = 3.0,
        domain_rand: bool = False,
        render_mode: str | None = None,
        cameras: tuple[str, ...] = ("front",),
    ):
        if tuple(cameras) != ("front",):
            raise ValueError(f"the wheeled base has one camera, 'front'; got cameras={list(cameras)}")
        self.plan = floorplan if isinstance(floorplan, FloorPlan) else load_floorplan(floorplan)
        if goal_room is not None:
            self.plan.room(goal_room)  # raises a clear KeyError naming the plan
        if start_room is not None:
            self.plan.room(start_room)
        self.fixed_goal_room = goal_room
        self.fixed_start_room = start_room
        self.dt = float(dt)
        self.limits = dataclasses.replace(WHEELED_BASE, dt_s=self.dt)
        self.success_radius = float(success_radius)
        self.min_start_distance = float(min_start_distance)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._list_id: int | None = None
        self.closed_doors: frozenset[frozenset[str]] = self.plan.closed_doors
        self._reset_options: dict = {}
        self.goal_room = goal_room or self.plan.rooms[0].name
        self.instruction = ""
        self.last_cmd = np.zeros(2, dtype=np.float32)
        h, w = self.image_size
        super().__init__(
            max_episode_steps=int(max_steps or self.plan.max_episode_steps or 400),
            obs_width=w,
            obs_height=h,
            window_width=max(2 * w, 64),
            window_height=max(2 * h, 48),
            domain_rand=domain_rand,
            render_mode=render_mode,
        )
        low = np.array([self.limits.v_min, -self.limits.w_max], dtype=np.float32)
        high = np.array([self.limits.v_max, self.limits.w_max], dtype=np.float32)
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict({"front": spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)}),
                "depth": spaces.Box(0.0, 100.0, (h, w), dtype=np.float32),
                "state": spaces.Box(low=low, high=high, dtype=np.float32),
            }
        )

    # ------------------------------------------------------------------ world building
    def _connect(self, mw_rooms: dict[str, Room], door) -> None:
        """MiniWorld connect_rooms with the facing edges given by the floor plan."""
        room_a, room_b = mw_rooms[door.a], mw_rooms[door.b]
        a_low = door.a_low
        if door.axis == "x":
            kw = {"min_z": door.span[0], "max_z": door.span[1]}
        else:
            kw = {"min_x": door.span[0], "max_x": door.span[1]}
        idx_a = _room_edges(door.axis, a_low)
        idx_b = _room_edges(door.axis, not a_low)
        start_a, end_a = room_a.add_portal(edge=idx_a, **kw)
        start_b, end_b = room_b.add_portal(edge=idx_b, **kw)
        if door.gap < 1e-6:
            return
        a = room_a.outline[idx_a] + room_a.edge_dirs[idx_a] * start_a
        b = room_a.outline[idx_a] + room_a.edge_dirs[idx_a] * end_a
        c = room_b.outline[idx_b] + room_b.edge_dirs[idx_b] * start_b
        d = room_b.outline[idx_b] + room_b.edge_dirs[idx_b] * end_b
        outline = np.stack([c, b, a, d])
        outline = np.stack([outline[:, 0], outline[:, 2]], axis=1)
        passage = Room(
            outline,
            wall_height=room_a.wall_height,
            wall_tex=room_a.wall_tex_name,
            floor_tex=room_a.floor_tex_name,
            ceil_tex=room_a.ceil_tex_name,
            no_ceiling=room_a.no_ceiling,
        )
        self.rooms.append(passage)
        passage.add_portal(1, start_pos=0, end_pos=np.linalg.norm(b - a))
        passage.add_portal(3, start_pos=0, end_pos=np.linalg.norm(d - c))

    def _build_rooms(self) -> None:
        """The rooms and the open doors of the plan (``closed_doors`` stay walls) into ``self.rooms``."""
        mw_rooms: dict[str, Room] = {}
        look = self.look
        walls = (look and look.wall_tex) or _WALL_TEX
        floors = (look and look.floor_tex) or _FLOOR_TEX
        ceiling = {"ceil_tex": look.ceil_tex} if look and look.ceil_tex else {}
        for i, r in enumerate(self.plan.rooms):
            mw_rooms[r.name] = self.add_rect_room(
                min_x=r.x[0],
                max_x=r.x[1],
                min_z=r.z[0],
                max_z=r.z[1],
                wall_tex=walls[i % len(walls)],
                floor_tex=floors[i % len(floors)],
                **ceiling,
            )
        for door in self.plan.doors:
            if door.key not in self.closed_doors:
                self._connect(mw_rooms, door)

    def set_door(self, a: str, b: str, closed: bool = True) -> bool:
        """Close (or open) the door between rooms ``a`` and ``b`` now, mid-episode.

        Rebuilds the walls (collision segments and the static display list). Returns False, changing
        nothing, when closing it would shut the door on the robot (it stands in the doorway).
        A door that does not exist is a ``FloorPlanError`` naming the plan and its doors.
        """
        key = self.plan.door_between(a, b).key
        before = self.closed_doors
        after = (before | {key}) if closed else (before - {key})
        if after == before:
            return True
        self.closed_doors = after
        self._rebuild_static()
        if closed and self.intersect(self.agent, self.agent.pos, self.agent.radius):
            self.closed_doors = before
            self._rebuild_static()
            return False
        return True

    def _rebuild_static(self) -> None:
        self.rooms = []
        self.wall_segs = []
        self._build_rooms()
        self._gen_static_data()
        self._render_static()

    def _sample_start(self, start_room: str, goal_xz: np.ndarray, single_room: bool) -> np.ndarray:
        r = self.plan.room(start_room)
        m = self.agent.radius + 0.2
        if len(self.wall_segs) == 0:
            self._gen_static_data()
        for _ in range(1000):
            x = self.np_random.uniform(r.x[0] + m, r.x[1] - m)
            z = self.np_random.uniform(r.z[0] + m, r.z[1] - m)
            if single_room and math.hypot(x - goal_xz[0], z - goal_xz[1]) < self.min_start_distance:
                continue
            if self.intersect(self.agent, np.array([x, 0.0, z]), self.agent.radius):
                continue
            return np.array([x, 0.0, z])
        raise RuntimeError(f"{self.plan.source}: cannot place the robot in room {start_room!r}")

    def _gen_world(self):
        opts = self._reset_options
        names = self.plan.room_names
        self.closed_doors = self.plan.closed_doors
        self._build_rooms()

        goal = opts.get("goal_room") or self.fixed_goal_room
        if goal is None:
            goal = names[int(self.np_random.integers(len(names)))]
        self.plan.room(goal)
        self.goal_room = goal
        groom = self.plan.room(goal)
        self.goal_xz = np.asarray(groom.goal_point, dtype=np.float64)
        self.instruction = f"go to the {groom.text}"

        self.goal_box = None
        if groom.goal is not None:
            self.goal_box = self.place_entity(
                BoxEntity(color="red", size=0.5), pos=np.array([self.goal_xz[0], 0.0, self.goal_xz[1]]), dir=0.0
            )

        start_pose = opts.get("start_pose")
        if start_pose is not None:
            x, z, yaw = (float(v) for v in start_pose)
            self.place_agent(pos=np.array([x, 0.0, z]), dir=yaw)
            self.start_room = self.plan.room_at(x, z) or ""
            return
        start = opts.get("start_room") or self.fixed_start_room
        if start is None:
            others = [n for n in names if n != goal]
            start = others[int(self.np_random.integers(len(others)))] if others else goal
        self.plan.room(start)
        self.start_room = start
        pos = self._sample_start(start, self.goal_xz, single_room=(start == goal))
        yaw = float(self.np_random.uniform(-math.pi, math.pi))
        self.place_agent(pos=pos, dir=yaw)

    # ------------------------------------------------------------------ observation / info
    def _observe(self) -> dict[str, Any]:
        rgb, depth = observe_rgb_depth(self)
        return {
            "images": {"front": rgb},
            "depth": depth,
            "state": self.last_cmd.copy(),
        }

    def observe(self) -> dict[str, Any]:
        """The observation now (a fresh render: after ``set_door`` the depth shows the change)."""
        return self._observe()

    @property
    def pose(self) -> np.ndarray:
        return np.array([self.agent.pos[0], self.agent.pos[2], self.agent.dir], dtype=np.float64)

    def _success(self) -> bool:
        x, z = float(self.agent.pos[0]), float(self.agent.pos[2])
        groom = self.plan.room(self.goal_room)
        if not groom.contains(x, z, margin=WALL_MARGIN):
            return False
        if groom.goal is not None:
            return math.hypot(x - self.goal_xz[0], z - self.goal_xz[1]) <= self.success_radius
        return True

    def _info(self, collided: bool = False) -> dict[str, Any]:
        x, z = float(self.agent.pos[0]), float(self.agent.pos[2])
        return {
            "pose": self.pose,
            "room": self.plan.room_at(x, z) or "",
            "goal_room": self.goal_room,
            "instruction": self.instruction,
            "is_success": bool(self._success()),
            "collided": bool(collided),
        }

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._reset_options = dict(options or {})
        self.look = self._reset_options.get("look")
        self.last_cmd = np.zeros(2, dtype=np.float32)
        super().reset(seed=seed)  # builds the world (_gen_world) and renders once
        self._reset_options = {}
        return self._observe(), self._info()

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(2)
        v, w = self.limits.clip(a[0], a[1])
        self.last_cmd = np.array([v, w], dtype=np.float32)
        self.step_count += 1
        collided = drive(self, v, w, self.dt)
        obs = self._observe()
        info = self._info(collided)
        terminated = info["is_success"]
        truncated = (not terminated) and self.step_count >= self.max_episode_steps
        reward = 1.0 - 0.2 * (self.step_count / self.max_episode_steps) if terminated else 0.0
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.render_obs(self.vis_fb)
        return super().render()

    def render_top(self) -> np.ndarray:
        """Top view of the whole floor plan with the robot (for videos / debugging)."""
        return self.render_top_view(self.vis_fb)



class WheeledSubgoalEnv(WheeledEnv):
    """``WheeledEnv`` whose state also carries the current subgoal of a route (``vla_stack/WheeledNav-v0``,
    embodiment ``wheeled_nav``): ``state`` float32 (6,) = (v, omega, then
    ``components.kinematics.subgoal_features`` of the subgoal: x_forward, y_left, cos and sin of its bearing).

    Each reset routes from the start pose to the goal as the scripted expert does (shortest room/door path
    through the open doors, points 1 m before and after each doorway, then the goal point);
    ``set_route(points)`` replaces it from the current pose (e.g. with a place graph's subgoals). The
    subgoal moves on as ``planners.navigate.follow_route`` moves it: past a point once within
    ``subgoal_reach_m`` of it or beyond it. ``info["subgoal"]`` is the current one as (x, z).
    """

    subgoal_reach_m = 0.5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.route: list[np.ndarray] = []
        self.route_seg = 0
        low = np.array([self.limits.v_min, -self.limits.w_max, -100.0, -100.0, -1.0, -1.0], dtype=np.float32)
        high = np.array([self.limits.v_max, self.limits.w_max, 100.0, 100.0, 1.0, 1.0], dtype=np.float32)
        self.observation_space["state"] = spaces.Box(low=low, high=high, dtype=np.float32)

    def set_route(self, points) -> None:
        """Drive through ``points`` [N, 2] ((x, z) each, N >= 1) from the current pose."""
        pts = [np.asarray(p, dtype=np.float64).reshape(2) for p in points]
        if not pts:
            raise ValueError("set_route: give at least one (x, z) point")
        self.route, self.route_seg = [self.pose[:2].copy()] + pts, 0

    @property
    def subgoal(self) -> np.ndarray:
        return self.route[self.route_seg + 1]

    def _observe(self) -> dict[str, Any]:
        from components.kinematics import advance_segment, subgoal_features, to_robot_frame
        obs = super()._observe()
        if self.route:
            self.route_seg = advance_segment(self.route, self.route_seg, self.pose[:2], reach_m=self.subgoal_reach_m)
            obs["state"] = np.concatenate([obs["state"], subgoal_features(to_robot_frame(self.subgoal, self.pose))])
        return obs

    def _info(self, collided: bool = False) -> dict[str, Any]:
        info = super()._info(collided)
        if self.route:
            info["subgoal"] = self.subgoal.copy()
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from components.envs.wheeled_expert import WheeledExpert
        self.route = []
        super().reset(seed=seed, options=options)
        expert = WheeledExpert(self.plan)
        expert.reset_from_env(self)
        self.route, self.route_seg = [np.asarray(p, dtype=np.float64) for p in expert.path], 0
        return self._observe(), self._info()
