"""Shared by the probes that query a policy on recorded frames (run as scripts from the repo root,
so this file's folder is on sys.path)."""
from components.episode_store import EpisodeStore


def recorded_frames(store: EpisodeStore, n: int, stride: int, tail: int):
    """(row, frame) for every ``stride``-th frame of the first ``n`` episodes, leaving out each
    episode's last ``tail`` frames; a frame holds the state, every camera and the instruction."""
    keys = ["state"] + [f"images/{c}" for c in store.cameras]
    for ep in range(n):
        rows = store.episode_slice(ep)
        for t in range(rows.start, rows.stop - tail, stride):
            yield t, store.get_frame(t, keys)
