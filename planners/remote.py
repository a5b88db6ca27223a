"""A policy served over the network (``vla-stack serve``) as a :class:`~planners.episode.Decider`.

Wire format (openpi's websocket policy protocol, docs/ARCHITECTURE.md "Policy server"): binary
msgpack frames in which a numpy array is a map ``{"__ndarray__": True, "data": bytes, "dtype": str,
"shape": [...]}`` and a numpy scalar ``{"__npgeneric__": True, "data": value, "dtype": str}``; the
server sends its metadata first, then answers each observation with its actions, or with a text
frame that says what was wrong with the request.
"""
from __future__ import annotations


import msgpack
import numpy as np

from components.embodiment import EmbodimentSpec, spec_from_dict
from components.errors import RemoteError
from planners.episode import Decision, policy_seed

_UNSUPPORTED_KINDS = ("V", "O", "c")  # structured, object and complex arrays have no portable bytes


class WireError(ValueError):
    """A frame that is not valid msgpack-numpy."""


def _encode(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _UNSUPPORTED_KINDS:
        raise TypeError(f"cannot send a numpy value of dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(obj: dict):
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _UNSUPPORTED_KINDS:
            raise WireError(f"array dtype {dtype} is not accepted")
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def pack(obj) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes):
    """Decode one frame; anything that is not msgpack-numpy is a :class:`WireError` saying why."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except Exception as err:  # msgpack's own errors, and bad dtype/shape/buffer sizes in an array map
        detail = f": {err}" if str(err) else ""
        raise WireError(f"not a msgpack-numpy message ({type(err).__name__}{detail})") from None


class RemoteDecider:
    """Decides by sending each observation to a policy server; the noise seed per decision is the
    local :class:`~planners.episode.PolicyDecider`'s, so a served policy gives the same episodes."""

    def __init__(self, uri: str, embodiment: str, timeout_s: float = 60.0):
        from websockets.sync.client import connect

        self.uri, self.embodiment = uri, embodiment
        try:
            self.connection = connect(uri, compression=None, max_size=None, open_timeout=timeout_s, legacy=True)
            self.metadata = unpack(self.connection.recv(timeout=timeout_s))
        except (OSError, TimeoutError) as err:
            raise RemoteError(f"--remote {uri}: cannot connect ({type(err).__name__}: {err}); expected a "
                              f"policy server there (`vla-stack serve --policy DIR`)") from None
        except Exception as err:  # a websocket handshake with something that is not our server
            raise RemoteError(f"--remote {uri}: not a policy server ({type(err).__name__}: {err})") from None
        served = self.metadata.get("embodiments", {}) if isinstance(self.metadata, dict) else {}
        if embodiment not in served:
            self.close()
            raise RemoteError(f"--remote {uri}: the server does not serve embodiment '{embodiment}'; it serves "
                              f"{sorted(served)}")
        self.spec: EmbodimentSpec = spec_from_dict(served[embodiment]["spec"], f"{uri} metadata")
        self.timeout_s = timeout_s
        self.episode_seed, self.calls = 0, 0

    def reset(self, episode_seed: int) -> None:
        self.episode_seed, self.calls = episode_seed, 0

    def decide(self, obs: dict, instruction: str) -> Decision:
        request = {"images": obs["images"], "prompt": instruction, "embodiment": self.embodiment,
                   "seed": policy_seed(self.episode_seed, self.calls)}
        if self.spec.state_dim:
            request["state"] = np.asarray(obs["state"], np.float32)
        self.connection.send(pack(request))
        reply = self.connection.recv(timeout=self.timeout_s)
        if isinstance(reply, str):
            raise RemoteError(f"--remote {self.uri}: the server refused the request: {reply}")
        reply = unpack(reply)
        self.calls += 1
        return Decision(np.asarray(reply["actions"]), float(reply["server_timing"]["infer_ms"]),
                        int(reply["clipped"]), int(reply["nonfinite"]))

    def on_step(self, obs: dict, action: np.ndarray, reward: float, info: dict) -> bool:
        return False

    def close(self) -> None:
        self.connection.close()
