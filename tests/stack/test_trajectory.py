"""Trajectory prediction on video: the two-frame view on the timestamp grid, the prediction JSON and
overlay, unreadable videos, and eval-trajectory's baselines on paths whose truth is known in closed form."""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from components.embodiment import Embodiments
from components.errors import UsageError, VideoError, VideoNotFoundError
from components.policy import Policy
from components.trajectory import GroundCamera, TrajectoryPredictor
from components.trajectory_eval import PoseTrack, baseline_positions, true_waypoints
from components.video_io import decode_video, frame_rgb, grid_frames, letterbox
from stack.cli import main
from stack.trajectory import eval_trajectory, predict_trajectory
from tests.stack.video_files import (color_index, write_audio_only, write_frameless_video, write_garbage,
                                     write_poses, write_truncated_mp4, write_video)

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The policy calls here run on one thread: with two on the shared two-core machine (tests/conftest.py)
    the tiny model's frames took 40x longer (0.27 s vs 10.5 s for 10 frames, measured)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: a variable frame rate: gaps of 10 to 470 ms, frames exactly on grid times (400, 900, 1000) and between them
VFR_PTS_MS = [0, 40, 50, 170, 180, 400, 410, 420, 430, 900, 1000, 1010, 1230]


def shown_at(pts_ms: list[int], t_ms: int) -> int:
    """The reference: the last frame with pts <= t (the first before the start)."""
    return max([k for k, p in enumerate(pts_ms) if p <= t_ms], default=0)


def test_variable_frame_rate_is_resampled_by_presentation_timestamps(tmp_path):
    video = decode_video(write_video(tmp_path / "vfr.mkv", VFR_PTS_MS))
    grid = list(grid_frames(video.frames(), hz=10, past_s=0.5, convert=lambda f: color_index(frame_rgb(f))))
    assert [g.t_s for g in grid] == pytest.approx([i / 10 for i in range(13)])  # up to the last frame, 1.23 s
    for g in grid:
        t_ms = 100 * g.index
        assert g.current == g.source == shown_at(VFR_PTS_MS, t_ms), g
        assert g.past == g.past_source == shown_at(VFR_PTS_MS, t_ms - 500), g
    assert video.decoded == len(VFR_PTS_MS) and video.measured_fps() == pytest.approx(12 / 1.23)


def test_resampling_converts_only_frames_that_are_shown():
    converted = []
    frames = ((k * Fraction(1, 30), k) for k in range(90))  # 3 s at 30 fps
    grid = list(grid_frames(frames, hz=10, past_s=0.5, convert=lambda k: converted.append(k) or k))
    assert [g.current for g in grid] == list(range(0, 90, 3))
    assert [g.past for g in grid] == [0] * 5 + list(range(0, 75, 3))
    assert sorted(set(converted)) == list(range(0, 90, 3))  # 60 of the 90 frames are never converted


def test_letterbox_pads_to_16_by_9_without_stretching():
    image = np.full((97, 131, 3), 255, np.uint8)  # 4:3-ish: black bars left and right
    boxed = letterbox(image, 90, 160)
    assert boxed.shape == (90, 160, 3)
    bar = round((160 - 131 * 90 / 97) / 2)
    assert boxed[:, : bar - 1].max() == 0 and boxed[:, -(bar - 1):].max() == 0
    assert boxed[:, bar + 1: -(bar + 1)].min() == 255
    wide = letterbox(np.full((40, 200, 3), 255, np.uint8), 90, 160)  # wider than 16:9: bars top and bottom
    assert wide[:10].max() == 0 and wide[-10:].max() == 0 and wide[45].min() == 255


def check_prediction_json(result: dict, video: Path, n_frames: int) -> None:
    assert {"video", "fps", "spacing_s", "frames"} <= set(result)
    assert result["video"] == str(video) and result["spacing_s"] == 0.5
    assert [f["index"] for f in result["frames"]] == list(range(n_frames))
    for f in result["frames"]:
        assert f["t_s"] == pytest.approx(f["index"] * 0.1)
        waypoints = np.asarray(f["waypoints"])
        assert waypoints.shape == (8, 4) and np.isfinite(waypoints).all()
        assert np.abs(waypoints[:, :2]).max() <= 20 and np.abs(waypoints[:, 2:]).max() <= 1  # the spec's ranges


def test_predict_trajectory_writes_the_documented_json_and_an_overlay(tiny_checkpoint, tmp_path):
    video = write_video(tmp_path / "clip.mp4", list(range(0, 3000, 50)), size=(160, 120), codec="libx264")
    out, overlay = tmp_path / "clip.json", tmp_path / "overlay.mp4"
    main(["predict-trajectory", str(video), "--policy", tiny_checkpoint, "--out", str(out),
          "--overlay", str(overlay), "--batch_size", "4"])
    result = json.loads(out.read_text())
    check_prediction_json(result, video, 30)  # 3 s of 20 fps video at the spec's 10 Hz
    assert result["fps"] == pytest.approx(20.0) and result["source_frames"] == 60
    assert [f["source_frame"] for f in result["frames"]] == list(range(0, 60, 2))
    assert result["instruction"] == "predict where the camera goes next" and result["past_frame_s"] == 0.5
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    # the same frames, one per policy call: the noise seed is per frame, not per batch
    again = predict_trajectory(str(video), tiny_checkpoint, str(tmp_path / "b1.json"), batch_size=1)
    assert np.allclose([f["waypoints"] for f in again["frames"]], [f["waypoints"] for f in result["frames"]],
                       atol=1e-4)


def test_an_odd_resolution_is_letterboxed_to_the_camera(tiny_checkpoint, tmp_path):
    video = write_video(tmp_path / "odd.mkv", list(range(0, 1000, 33)), size=(131, 97))
    predictor = TrajectoryPredictor(Policy.from_pretrained(tiny_checkpoint), batch_size=8)
    seen = []
    policy_batch = predictor.policy.sample_batch

    def recording(requests, seeds):
        seen.extend(obs["images"] for obs, _, _ in requests)
        return policy_batch(requests, seeds)
    predictor.policy.sample_batch = recording
    predictions = list(predictor.predict(decode_video(video)))
    assert [p.index for p in predictions] == list(range(10))
    assert all(img["front"].shape == img["past"].shape == (90, 160, 3) for img in seen)
    assert seen[0]["front"][:, :5].max() == 0 and color_index(seen[9]["front"][:, 40:120]) == 27  # t 0.9 s: frame 27
    assert color_index(seen[9]["past"][:, 40:120]) == 12  # t 0.4 s: 396 ms, frame 12


@pytest.mark.parametrize("make, message", [
    (lambda d: write_garbage(d / "garbage.mp4"), r"garbage.mp4: cannot be read as a video \(InvalidDataError"),
    (lambda d: write_truncated_mp4(d / "cut.mp4"), r"cut.mp4: corrupt or truncated video: its index declares 30 "
                                                   r"frames but only \d+ could be decoded"),
    (lambda d: write_frameless_video(d / "empty.avi"), r"empty.avi: the video stream has no frames"),
    (lambda d: write_audio_only(d / "sound.m4a"), r"sound.m4a: has no video stream \(streams: audio\)"),
    (lambda d: (d / "notes.txt").write_text("not a video\n") and d / "notes.txt", r"notes.txt: cannot be read"),
], ids=["garbage", "truncated", "zero-frames", "audio-only", "text"])
def test_an_unreadable_video_is_an_error_naming_the_file(make, message, tmp_path):
    path = make(tmp_path)
    with pytest.raises(VideoError, match=message):
        video = decode_video(path)
        list(video.frames())


def test_a_missing_video_and_a_policy_without_the_video_embodiment(tiny_checkpoint, tmp_path):
    with pytest.raises(VideoNotFoundError, match=r"video '.*nowhere.mp4' does not exist"):
        decode_video(tmp_path / "nowhere.mp4")
    policy = Policy.from_pretrained(tiny_checkpoint)
    policy.processor.embodiments = Embodiments([s for s in policy.processor.embodiments if s.name != "video"])
    with pytest.raises(UsageError, match=r"knows the embodiments \['aloha', 'fetch', 'wheeled'\], not 'video'"):
        TrajectoryPredictor(policy)


# ---- ground truth and baselines --------------------------------------------------------------------
def circle(t: np.ndarray, v: float, w: float, start=(3.0, -2.0), yaw0: float = 0.7):
    """A unicycle at constant speed ``v`` and yaw rate ``w`` (straight when w = 0): x, y, yaw at ``t``."""
    yaw = yaw0 + w * t
    if w == 0:
        return start[0] + v * t * math.cos(yaw0), start[1] + v * t * math.sin(yaw0), yaw
    r = v / w
    return (start[0] + r * (np.sin(yaw) - math.sin(yaw0)), start[1] - r * (np.cos(yaw) - math.cos(yaw0)), yaw)


def test_baselines_on_a_circle_match_their_closed_forms():
    t = np.arange(0, 121) * 0.05
    v, w = 1.0, 0.5
    track = PoseTrack(t, np.stack(circle(t, v, w)[:2], axis=1), circle(t, v, w)[2])
    tau = 0.5 * np.arange(1, 9)
    r = v / w
    truth = true_waypoints(track, 1.0, 0.5, 8)
    assert np.allclose(truth[:, 0], r * np.sin(w * tau)) and np.allclose(truth[:, 1], r * (1 - np.cos(w * tau)))
    assert np.allclose(truth[:, 2], np.cos(w * tau)) and np.allclose(truth[:, 3], np.sin(w * tau))
    base = baseline_positions(track, 1.0, 0.5, 8)
    assert np.abs(base["constant_velocity"] - truth[:, :2]).max() < 1e-9
    moved = np.array([r * math.sin(w * 0.5), -r * (1 - math.cos(w * 0.5))])  # the last 0.5 s, seen from now
    assert np.allclose(base["linear"], moved * (tau / 0.5)[:, None])
    assert not base["standing_still"].any()


def write_clip(directory: Path, name: str, v: float, w: float, seconds: float = 6.0) -> Path:
    video = write_video(directory / f"{name}.mkv", list(range(0, int(seconds * 1000), 100)))
    t = np.arange(0, int(seconds * 20) + 1) * 0.05
    write_poses(directory / f"{name}.poses.csv", t, *circle(t, v, w))
    return video


def test_eval_trajectory_baselines_on_known_paths(tiny_checkpoint, tmp_path):
    write_clip(tmp_path, "a_straight", v=0.8, w=0.0)
    write_clip(tmp_path, "b_circle", v=1.0, w=0.5)
    result = eval_trajectory(str(tmp_path), tiny_checkpoint, json=str(tmp_path / "eval.json"),
                             plot=str(tmp_path / "eval.png"))
    tau = 0.5 * np.arange(1, 9)
    straight, turning = result["per_video"]
    # grid 0..5.9 s; evaluated: 0.5 s of past and 4 s of future inside the poses (0..6 s): t = 0.5..2.0
    assert straight["methods"]["model"]["frames"] == turning["methods"]["model"]["frames"] == 16
    s = straight["methods"]
    assert max(s["constant_velocity"]["ade_m"] + s["linear"]["fde_m"]) < 1e-6
    assert s["standing_still"]["fde_m"] == pytest.approx(list(0.8 * tau))  # the distance travelled
    assert s["standing_still"]["ade_m"] == pytest.approx(list(np.cumsum(0.8 * tau) / np.arange(1, 9)))
    c = turning["methods"]
    chord = 2 * 2.0 * np.sin(0.5 * tau / 2)  # radius 2 m: where the camera will be, seen from where it is
    assert max(c["constant_velocity"]["fde_m"]) < 1e-6
    assert c["standing_still"]["fde_m"] == pytest.approx(list(chord))
    assert c["linear"]["fde_m"][0] == pytest.approx(2 * 2.0 * (1 - math.cos(0.25)))  # 2 sagittas after 0.5 s
    assert c["linear"]["fde_m"][-1] > 1.0 and c["model"]["fde_m"][-1] > 0
    pooled = result["pooled"]
    assert pooled["model"]["frames"] == 32
    assert pooled["standing_still"]["fde_m"] == pytest.approx(list((0.8 * tau + chord) / 2))
    assert json.loads((tmp_path / "eval.json").read_text())["pooled"] == pooled
    assert Image.open(tmp_path / "eval.png").size[0] > 600


def test_poses_sidecar_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "clip.poses.csv"
    bad.write_text("t_s,x_m,y_m,yaw_rad\n0,0,0,0\n0.1,0.1,zero,0\n")
    with pytest.raises(VideoError, match=r"clip.poses.csv:3: '0.1,0.1,zero,0' is not 4 numbers"):
        PoseTrack.read(bad)
    bad.write_text("time,x,y,yaw\n0,0,0,0\n")
    with pytest.raises(VideoError, match=r"clip.poses.csv:1: header is time,x,y,yaw; expected t_s,x_m,y_m,yaw_rad"):
        PoseTrack.read(bad)
    bad.write_text("t_s,x_m,y_m,yaw_rad\n0,0,0,0\n0.2,0,0,0\n0.1,0,0,0\n")
    with pytest.raises(VideoError, match=r"clip.poses.csv:4: t_s 0.1 does not increase"):
        PoseTrack.read(bad)
    track = PoseTrack(np.array([0.0, 2.0]), np.zeros((2, 2)), np.zeros(2), source="p.csv")
    with pytest.raises(VideoError, match=r"p.csv: poses cover 0..2 s but the video v.mp4 runs 0..5.9 s"):
        track.require_covers(0.0, 5.9, "v.mp4")


def test_yaw_is_unwrapped_before_interpolation(tmp_path):
    path = write_poses(tmp_path / "p.poses.csv", np.array([0.0, 1.0]), np.zeros(2), np.zeros(2),
                       np.array([3.1, -3.1]))  # +0.083 rad through pi, not -6.2 rad
    assert PoseTrack.read(path).at(0.5)[2] == pytest.approx(math.pi)


def test_ground_projection_of_the_pinhole_model():
    camera = GroundCamera(height_m=1.0, pitch_deg=0.0, fov_deg=90.0)  # f = W / 2
    uv, visible = camera.project(np.array([[2.0, 0.0], [2.0, 2.0], [-1.0, 0.0]]), 160, 90)
    assert visible.tolist() == [True, True, False]
    assert uv[0] == pytest.approx([80, 45 + 80 * 1.0 / 2])  # straight ahead: below the centre by f h / x
    assert uv[1] == pytest.approx([80 - 80 * 2 / 2, 45 + 40])  # 2 m left at 2 m: the left edge
    tilted = GroundCamera(height_m=1.0, pitch_deg=-45.0, fov_deg=90.0)  # looking down at 45 deg
    assert tilted.project(np.array([[1.0, 0.0]]), 160, 90)[0][0] == pytest.approx([80, 45])
