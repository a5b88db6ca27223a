"""``vla-stack predict-trajectory`` and ``eval-trajectory``: a policy's ``video`` embodiment over plain
videos, the prediction JSON and overlay video, and ADE/FDE against three baselines on videos with a
poses sidecar (formats in docs/ARCHITECTURE.md, "Trajectory prediction on video")."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from components.errors import UsageError
from components.trajectory import DEFAULT_FOV_DEG, MINIWORLD_CAMERA_HEIGHT_M, GroundCamera, TrajectoryPredictor
from components.trajectory_eval import (HISTORY_S, METHODS, PoseTrack, baseline_positions, displacement_summary,
                                        horizon_times, sidecar_path, true_waypoints)
from components.video_io import VIDEO_SUFFIXES, decode_video

OVERLAY_SIZE = (360, 640)  # (H, W) of the overlay's frames: the video letterboxed to 16:9
PATH_COLOR = (255, 60, 40)


def _predictor(policy: str, instruction: str | None, batch_size: int, seed: int) -> TrajectoryPredictor:
    from components.policy import Policy
    return TrajectoryPredictor(Policy.from_pretrained(policy), instruction, batch_size, seed)


def _progress(predictions, total: int | None, desc: str):
    """``predictions`` with a tqdm bar of model frames (frames/s)."""
    from tqdm import tqdm
    bar = tqdm(predictions, total=total, desc=desc, unit="frame", dynamic_ncols=True)
    try:
        yield from bar
    finally:
        bar.close()


def draw_path(image: np.ndarray, waypoints: np.ndarray, camera: GroundCamera, samples: int = 8) -> np.ndarray:
    """``image`` uint8 [H, W, 3] with the ground path origin -> waypoints ``[N, >=2]`` projected onto it
    (a line where it lies in front of the camera, a dot per waypoint)."""
    from PIL import Image, ImageDraw
    height, width = image.shape[:2]
    points = np.concatenate([np.zeros((1, 2)), np.asarray(waypoints, np.float64)[:, :2]])
    s = np.linspace(0, 1, samples, endpoint=False)
    dense = np.concatenate([a + s[:, None] * (b - a) for a, b in zip(points[:-1], points[1:])] + [points[-1:]])
    uv, visible = camera.project(dense, width, height)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for i in range(len(uv) - 1):
        if visible[i] and visible[i + 1]:
            draw.line([tuple(uv[i]), tuple(uv[i + 1])], fill=PATH_COLOR, width=3)
    marks, seen = camera.project(points[1:], width, height)
    for (u, v), ok in zip(marks, seen):
        if ok:
            draw.ellipse([(u - 4, v - 4), (u + 4, v + 4)], outline=(255, 255, 255), fill=PATH_COLOR)
    return np.asarray(canvas)


def predict_trajectory(video: str, policy: str, out: str, overlay: str | None = None,
                       instruction: str | None = None, fov_deg: float = DEFAULT_FOV_DEG,
                       camera_height_m: float = MINIWORLD_CAMERA_HEIGHT_M, pitch_deg: float = 0.0,
                       batch_size: int = 8, seed: int = 0) -> dict:
    """Predict where the camera goes next at every model frame of a video: 8 waypoints 0.5 s apart in the
    camera's ground frame, one prediction per 1/control_hz s of video time (the `video` embodiment).

    Args:
        video: the video file (what PyAV reads: mp4, mkv, webm, avi, ...; any size and frame rate).
        policy: checkpoint directory that knows the `video` embodiment.
        out: the prediction JSON (format in docs/ARCHITECTURE.md), written atomically.
        overlay: also write an mp4 of the model frames with each frame's predicted path drawn on it.
        instruction: the task text (default: the `video` spec's instruction).
        fov_deg: horizontal field of view of the camera, for the overlay's ground projection (default:
            MiniWorld's camera, 60 deg vertical, on a 16:9 image).
        camera_height_m: the camera's height above the ground, for the overlay.
        pitch_deg: the camera's upward tilt, for the overlay.
        batch_size: model frames per policy call.
        seed: noise seed of model frame 0 (frame i uses seed + i).
    """
    from stack.results import VideoWriter, annotate, write_json

    camera = GroundCamera(camera_height_m, pitch_deg, fov_deg)
    camera.project(np.zeros((1, 2)), 2, 2)  # checks the field of view before any work
    decoded = decode_video(video)
    predictor = _predictor(policy, instruction, batch_size, seed)
    spec = predictor.spec
    frames, start = [], time.perf_counter()
    with VideoWriter(overlay, fps=predictor.hz) if overlay else contextlib.nullcontext() as writer:
        predictions = predictor.predict(decoded, display_size=OVERLAY_SIZE if writer else None)
        for p in _progress(predictions, decoded.info.frames_at(predictor.hz), Path(video).name):
            frames.append({"index": p.index, "t_s": round(p.t_s, 6), "source_frame": p.source,
                           "past_source_frame": p.past_source,
                           "waypoints": [[round(float(v), 5) for v in row] for row in p.waypoints]})
            if writer:
                writer.write(annotate(draw_path(p.display, p.waypoints, camera),
                                      [f"{Path(video).name}  t {p.t_s:.1f} s  (model frame {p.index})",
                                       f"predicted path, {len(p.waypoints)} x {spec.waypoint_spacing_s:g} s"]))
        elapsed = time.perf_counter() - start
    info = decoded.info
    result = {"video": str(video), "fps": decoded.measured_fps(), "spacing_s": spec.waypoint_spacing_s,
              "frames": frames,
              "container_fps": info.average_fps, "width": info.width, "height": info.height,
              "source_frames": decoded.decoded, "skipped_frames": decoded.skipped,
              "frame_interval_s": 1 / predictor.hz, "past_frame_s": spec.past_frame_s,
              "predicted_by": predictor.predicted_by,
              "cameras": [[c.name, c.height, c.width] for c in spec.cameras],
              "instruction": predictor.instruction, "policy": str(policy), "embodiment": spec.name,
              "seed": seed, "batch_size": batch_size, "model_frames_per_s": len(frames) / max(elapsed, 1e-9),
              "overlay": str(writer.path) if writer and writer.frames else None,
              "overlay_camera": {"fov_deg": fov_deg, "height_m": camera_height_m, "pitch_deg": pitch_deg}}
    write_json(result, out)
    print(f"{video}: {len(frames)} model frames ({decoded.decoded} decoded at {result['fps'] or 0:.2f} fps), "
          f"{result['model_frames_per_s']:.1f} frames/s -> {out}")
    return result


# ------------------------------------------------------------------------------------ evaluation
def video_pairs(directory: str) -> list[tuple[Path, Path]]:
    """``(video, poses sidecar)`` of every video in ``directory`` that has a sidecar, in name order."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--videos: '{root}' is not a directory; expected a folder of videos, each with a "
                         f"poses sidecar (clip.mp4 + clip.poses.csv)")
    videos = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    pairs = [(v, sidecar_path(v)) for v in videos if sidecar_path(v).is_file()]
    if not pairs:
        raise UsageError(f"--videos: '{root}' has no video with a poses sidecar ({len(videos)} video(s) "
                         f"{[v.name for v in videos][:5]}, {len(list(root.glob('*.poses.csv')))} sidecar(s)); "
                         f"expected clip.mp4 beside clip.poses.csv (video suffixes {list(VIDEO_SUFFIXES)})")
    return pairs


def evaluate_video(predictor: TrajectoryPredictor, video: Path, poses: Path) -> dict:
    """Per-step displacement errors ``{method: [N, H]}`` on the frames of ``video`` whose true past
    (0.5 s) and future lie inside its poses, and what was evaluated."""
    spec = predictor.spec
    spacing, horizon = spec.waypoint_spacing_s, spec.chunk_horizon
    horizon_s = float(horizon_times(spacing, horizon)[-1])
    track = PoseTrack.read(poses)
    track.require_covers(0.0, 0.0, str(video))  # the end is checked once the video is decoded
    decoded = decode_video(video)
    errors = {m: [] for m in METHODS}
    predictions = predictor.predict(decoded, keep=lambda t: track.evaluable(t, horizon_s))
    for p in _progress(predictions, None, video.name):
        truth = true_waypoints(track, p.t_s, spacing, horizon)[:, :2]
        guesses = {"model": p.waypoints[:, :2], **baseline_positions(track, p.t_s, spacing, horizon)}
        for method, xy in guesses.items():
            errors[method].append(np.linalg.norm(xy - truth, axis=1))
    track.require_covers(0.0, decoded.last_grid_s(predictor.hz), str(video))
    return {"video": str(video), "poses": str(poses), "fps": decoded.measured_fps(),
            "grid_frames": int(round(decoded.last_grid_s(predictor.hz) * predictor.hz)) + 1,
            "errors": {m: np.asarray(e).reshape(-1, horizon) for m, e in errors.items()}}


def _table(name: str, summary: dict) -> str:
    rows = [f"{name}: {summary['model']['frames']} frames"]
    for method in METHODS:
        s = summary[method]
        rows.append(f"  {method:<18} ADE {s['ade_m'][-1]:7.3f} m  FDE {s['fde_m'][-1]:7.3f} m" if s["frames"]
                    else f"  {method:<18} (no frame evaluated)")
    return "\n".join(rows)


def eval_trajectory(videos: str, policy: str, json: str | None = None, plot: str | None = None,
                    instruction: str | None = None, batch_size: int = 8, seed: int = 0) -> dict:
    """ADE and FDE (m) per horizon step of a policy's predicted trajectories on videos with true poses,
    beside three baselines (constant velocity and linear extrapolation from the last 0.5 s of true poses,
    standing still); per video and pooled over all evaluated frames.

    A frame is evaluated when its poses reach 0.5 s back and 4 s ahead (chunk_horizon x waypoint_spacing_s).

    Args:
        videos: folder of videos, each with a poses sidecar beside it (clip.mp4 + clip.poses.csv; header
            t_s,x_m,y_m,yaw_rad; docs/ARCHITECTURE.md).
        policy: checkpoint directory that knows the `video` embodiment.
        json: write the result here (atomically).
        plot: write a PNG of ADE and FDE against the horizon for each method.
        instruction: the task text (default: the `video` spec's instruction).
        batch_size: model frames per policy call.
        seed: noise seed of model frame 0 (frame i uses seed + i).
    """
    from stack.results import line_plot, write_json

    pairs = video_pairs(videos)
    predictor = _predictor(policy, instruction, batch_size, seed)
    spec = predictor.spec
    horizon_s = [float(t) for t in horizon_times(spec.waypoint_spacing_s, spec.chunk_horizon)]
    per_video, pooled = [], {m: [] for m in METHODS}
    for video, poses in pairs:
        result = evaluate_video(predictor, video, poses)
        errors = result.pop("errors")
        result["methods"] = {m: displacement_summary(e) for m, e in errors.items()}
        per_video.append(result)
        for m, e in errors.items():
            pooled[m].append(e)
        print(_table(video.name, result["methods"]))
    pooled_summary = {m: displacement_summary(np.concatenate(e)) for m, e in pooled.items()}
    if not pooled_summary["model"]["frames"]:
        raise UsageError(f"--videos {videos}: no model frame of the {len(pairs)} video(s) has 0.5 s of true poses "
                         f"before it and {horizon_s[-1]:g} s after; expected videos (and poses) longer than "
                         f"{0.5 + horizon_s[-1]:g} s")
    print(_table(f"pooled over {len(pairs)} video(s)", pooled_summary))
    result = {"videos": videos, "policy": str(policy), "instruction": predictor.instruction,
              "embodiment": spec.name, "horizon_s": horizon_s, "history_s": HISTORY_S, "seed": seed,
              "pooled": pooled_summary, "per_video": per_video}
    if plot:
        panels = {f"{kind.upper()} (m), {pooled_summary['model']['frames']} frames of {len(pairs)} video(s)":
                  {m: pooled_summary[m][f"{kind}_m"] for m in METHODS} for kind in ("ade", "fde")}
        result["plot"] = str(line_plot(panels, horizon_s, plot, title=f"eval-trajectory {videos}",
                                       x_label="horizon (s)"))
    if json:
        write_json(result, json)
    return result
