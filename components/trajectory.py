"""Trajectory prediction on video: the model's two-frame view of a video, one prediction per grid
time, and the pinhole projection of predicted ground points onto the image.

    predictor = TrajectoryPredictor(Policy.from_pretrained(DIR), batch_size=8)
    for p in predictor.predict(decode_video("clip.mp4")):
        p.t_s, p.waypoints  # [8, 4] = (x_forward_m, y_left_m, cos, sin) in the camera's ground frame at t_s

The view is declared by the ``video`` embodiment spec (configs/embodiments/video.yaml): its first camera
shows the frame at t, camera ``past`` the frame at ``t - past_frame_s``, one prediction every
``1 / control_hz`` s of video time (docs/ARCHITECTURE.md, "Trajectory prediction on video").
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from components.embodiment import PAST_CAMERA, EmbodimentSpec
from components.errors import UsageError
from components.odometry import clip_steps
from components.processor import resize_image
from components.video_io import DecodedVideo, frame_rgb, grid_frames, letterbox

VIDEO_EMBODIMENT = "video"


def video_spec(policy, where: str = "--policy") -> EmbodimentSpec:
    """The checkpoint's ``video`` spec, or a :class:`UsageError` saying the checkpoint does not have one."""
    if VIDEO_EMBODIMENT not in policy.embodiments:
        raise UsageError(f"{where}: this checkpoint knows the embodiments {sorted(policy.embodiments)}, not "
                         f"'{VIDEO_EMBODIMENT}': it was not trained for trajectory prediction on video; give a "
                         f"checkpoint whose embodiments.yaml has '{VIDEO_EMBODIMENT}' (configs/embodiments/video.yaml)")
    spec = policy.processor.embodiments[VIDEO_EMBODIMENT]
    if spec.action_kind != "waypoints" or not spec.waypoint_spacing_s:
        raise UsageError(f"{where}: embodiment '{spec.name}' ({spec.source}) has action_kind {spec.action_kind!r}; "
                         f"trajectory prediction needs waypoints with a waypoint_spacing_s")
    return spec


@dataclass
class FramePrediction:
    """The prediction at one grid time of a video."""
    index: int               # grid index: t_s = index / control_hz
    t_s: float               # seconds since the video's first frame
    source: int              # decoded frame shown at t_s (decoding order)
    past_source: int         # decoded frame shown at t_s - past_frame_s
    waypoints: np.ndarray    # [H, 4] (x_forward_m, y_left_m, cos_heading, sin_heading)
    display: np.ndarray | None = None  # uint8 [h, w, 3]: the frame letterboxed at the display size


class TrajectoryPredictor:
    """A policy's ``video`` embodiment run over a video, ``batch_size`` grid times per policy call.

    The noise seed of grid index i is ``seed + i``, so a prediction does not depend on the batch size.
    """

    def __init__(self, policy, instruction: str | None = None, batch_size: int = 8, seed: int = 0):
        if batch_size < 1:
            raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
        self.policy = policy
        self.spec = video_spec(policy)
        self.instruction = instruction or self.spec.instruction or self.spec.notes
        self.batch_size = batch_size
        self.seed = seed
        names = self.spec.camera_names
        self.current_camera = self.spec.cameras[0]
        self.past_camera = self.spec.cameras[names.index(PAST_CAMERA)] if self.spec.past_frame_s else None
        extra = [n for n in names if n not in (self.current_camera.name, PAST_CAMERA)]
        if extra:
            raise UsageError(f"--policy: embodiment '{self.spec.name}' ({self.spec.source}) has cameras {names}; a "
                             f"video gives the frame at t (the first camera) and, with past_frame_s, '{PAST_CAMERA}'")

    @property
    def predicted_by(self) -> str:
        """What gives the waypoints: the decoder's motion history (components/odometry.py) or its flow sampler."""
        net = self.policy.motion_history
        if net is None:
            return "flow decoder (front and past cameras)"
        return f"motion history ({net.pairs + 1} frames {net.stride / self.hz:g} s apart)"

    @property
    def hz(self) -> float:
        return self.spec.control_hz

    @property
    def past_s(self) -> float:
        return self.spec.past_frame_s or 0.0

    def predict(self, video: DecodedVideo, keep: Callable[[float], bool] | None = None,
                display_size: tuple[int, int] | None = None) -> Iterator[FramePrediction]:
        """One :class:`FramePrediction` per grid time of ``video`` (those ``keep(t_s)`` accepts), in order."""
        cur, past = self.current_camera, self.past_camera

        def view(frame) -> tuple[np.ndarray, np.ndarray | None]:
            rgb = frame_rgb(frame)
            return (letterbox(rgb, cur.height, cur.width),
                    letterbox(rgb, *display_size) if display_size else None)

        def past_view(frame) -> np.ndarray | None:
            return letterbox(frame_rgb(frame), past.height, past.width) if past else None

        net = self.policy.motion_history
        stream = OdometryStream(net, self.batch_size) if net is not None else None
        pending = []
        for grid in grid_frames(video.frames(), self.hz, self.past_s, view, past_view):
            index = stream.append(resize_image(grid.current[0], *net.size)) if stream is not None else None
            if keep is None or keep(grid.t_s):
                pending.append((grid, index))
            if len(pending) == self.batch_size:
                yield from self._run(pending, stream)
                pending = []
        if pending:
            yield from self._run(pending, stream)

    def _run(self, pending: list, stream: OdometryStream | None) -> list[FramePrediction]:
        grids = [g for g, _ in pending]
        if stream is not None:  # the decoder's motion history predicts the waypoints
            waypoints = stream.waypoints([i for _, i in pending])
            return [FramePrediction(g.index, g.t_s, g.source, g.past_source, w, g.current[1])
                    for g, w in zip(grids, waypoints)]
        requests = []
        for g in grids:
            images = {self.current_camera.name: g.current[0]}
            if self.past_camera is not None:
                images[PAST_CAMERA] = g.past
            requests.append(({"images": images}, self.spec.name, self.instruction))
        chunks = self.policy.sample_batch(requests, seeds=[self.seed + g.index for g in grids])
        return [FramePrediction(g.index, g.t_s, g.source, g.past_source, c.chunks[0], g.current[1])
                for g, c in zip(grids, chunks)]


class OdometryStream:
    """The motion history over a stream of views: each neighbouring pair's odometry is computed once, in
    batches of ``batch_size`` pairs, and reused by every clip that holds it (one pair per view instead of
    ``pairs``). A clip is the one training reads (components/motion_training.py): views ``stride`` grid
    steps apart, those before the first view marked invalid (their pairs move nothing)."""

    def __init__(self, net, batch_size: int):
        self.net, self.batch_size = net, batch_size
        self.views: deque = deque(maxlen=net.stride + batch_size + 1)  # (index, uint8 [3, h, w])
        self.todo: list[int] = []  # views whose pair (index - stride, index) has no odometry yet
        self.odometry: dict = {}   # a pair's newer view index -> its normalized odometry [3]
        self.count = 0

    def append(self, view: np.ndarray) -> int:
        """Adds a view (uint8 ``[h, w, 3]`` at the net's size); returns its index in the stream."""
        index, self.count = self.count, self.count + 1
        self.views.append((index, np.ascontiguousarray(view.transpose(2, 0, 1))))
        if index >= self.net.stride:
            self.todo.append(index)
        if len(self.todo) >= self.batch_size:
            self._flush()
        return index

    @torch.no_grad()
    def _flush(self) -> None:
        if not self.todo:
            return
        views, s = dict(self.views), self.net.stride
        older = torch.from_numpy(np.stack([views[i - s] for i in self.todo]))
        newer = torch.from_numpy(np.stack([views[i] for i in self.todo]))
        self.odometry.update(zip(self.todo, self.net.odometry(older, newer)))
        self.todo = []

    @torch.no_grad()
    def waypoints(self, indices: list[int]) -> np.ndarray:
        """Waypoints ``[len(indices), horizon, 4]`` of the clips ending at the views ``indices`` (appended already)."""
        self._flush()
        net = self.net
        zero = torch.zeros(3, dtype=net.pair_scale.dtype)
        odometry, valid = [], []
        for t in indices:
            frames = t - clip_steps(net.pairs, net.stride)  # oldest first
            ok = frames >= 0
            odometry.append(torch.stack([self.odometry[int(e)] if o else zero for e, o in zip(frames[1:], ok[:-1])]))
            valid.append(ok)
        # later clips end at count or after: their oldest pair ends at count - (pairs - 1) * stride
        oldest = self.count - (net.pairs - 1) * net.stride
        for k in [k for k in self.odometry if k < oldest]:
            del self.odometry[k]
        return net.waypoints(torch.stack(odometry), torch.from_numpy(np.stack(valid))).float().numpy()


# ------------------------------------------------------------------------------------ projection
MINIWORLD_FOV_Y_DEG = 60.0  # MiniWorld's camera: vertical field of view, at 1.5 m, pitch 0
MINIWORLD_CAMERA_HEIGHT_M = 1.5
#: the horizontal field of view of MiniWorld's camera on a 16:9 image (the video embodiment's cameras)
DEFAULT_FOV_DEG = math.degrees(2 * math.atan(math.tan(math.radians(MINIWORLD_FOV_Y_DEG / 2)) * 16 / 9))


@dataclass(frozen=True)
class GroundCamera:
    """A pinhole camera ``height_m`` above flat ground, tilted up by ``pitch_deg``, with horizontal field of
    view ``fov_deg``; it projects ground points (x_forward_m, y_left_m) of its ground frame onto the image.

    With f = (W / 2) / tan(fov / 2) and the point at camera depth z = x cos(pitch) - h sin(pitch) and
    height above the optical axis y = -x sin(pitch) - h cos(pitch):
    u = W / 2 - f * y_left / z, v = H / 2 - f * y / z, visible where z > 0.
    """
    height_m: float = MINIWORLD_CAMERA_HEIGHT_M
    pitch_deg: float = 0.0
    fov_deg: float = DEFAULT_FOV_DEG

    def project(self, points: np.ndarray, width: int, height: int, near_m: float = 0.05
                ) -> tuple[np.ndarray, np.ndarray]:
        """``points [N, 2]`` ground points -> pixel coordinates ``[N, 2]`` (u right, v down) and ``[N]``
        whether each lies in front of the camera (deeper than ``near_m``)."""
        if not 0 < self.fov_deg < 180:
            raise UsageError(f"--fov_deg must be in (0, 180), got {self.fov_deg:g}")
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        f = (width / 2) / math.tan(math.radians(self.fov_deg) / 2)
        pitch = math.radians(self.pitch_deg)
        depth = pts[:, 0] * math.cos(pitch) - self.height_m * math.sin(pitch)
        up = -pts[:, 0] * math.sin(pitch) - self.height_m * math.cos(pitch)
        visible = depth > near_m
        safe = np.where(visible, depth, 1.0)
        uv = np.stack([width / 2 - f * pts[:, 1] / safe, height / 2 - f * up / safe], axis=1)
        return uv, visible
