"""``vla-stack serve --policy DIR``: the policy behind openpi's websocket policy protocol.

Any client of that protocol (the ``openpi-client`` package's ``WebsocketClientPolicy``, or
:class:`planners.remote.RemoteDecider` behind ``vla-stack run --remote``) gets the metadata on
connect, then sends observations and receives action chunks. Requests that arrive within
``batch_window_ms`` of each other, from any clients, go to the model as one batch
(:meth:`components.policy.Policy.sample_batch`). Protocol and keys: docs/ARCHITECTURE.md "Policy server".
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.embodiment import EmbodimentSpec, spec_to_dict
from components.errors import CheckpointNotFoundError, UsageError
from components.policy import ObservationError, validate_observation
from planners.remote import WireError, pack, unpack

PROTOCOL = "openpi-websocket/vla-stack-1"
#: request keys besides the observation's own (images/<camera>, state)
PROMPT, EMBODIMENT, SEED = "prompt", "embodiment", "seed"
READY = re.compile(r"serving .* on ws://(?P<host>[^:\s]+):(?P<port>\d+)")


class RequestError(ValueError):
    """A request the server answers with an error frame (the client's mistake, not the server's)."""


def observation_spec(spec: EmbodimentSpec) -> dict:
    """Every request key of ``spec``'s observation with its shape and dtype ('/' joins nested keys)."""
    keys = {f"images/{c.name}": {"shape": [c.height, c.width, 3], "dtype": "uint8"} for c in spec.cameras}
    if spec.state_dim:
        keys["state"] = {"shape": [spec.state_dim], "dtype": "float32"}
    keys[PROMPT] = {"shape": [], "dtype": "str"}
    return keys


def server_metadata(policy, policy_dir: str) -> dict:
    embodiments = {}
    for name in policy.embodiments:
        spec = policy.processor.embodiments[name]
        embodiments[name] = {
            "observation_spec": observation_spec(spec),
            "action_slots": [s.name for s in spec.action_slots],
            "action_shape": [spec.chunk_horizon, spec.action_dim],
            "action_kind": spec.action_kind, "control_hz": spec.control_hz,
            "spec": spec_to_dict(spec)}
    return {"server": "vla-stack", "protocol": PROTOCOL, "policy": str(policy_dir), "embodiments": embodiments,
            "embodiment_key": EMBODIMENT if len(embodiments) > 1 else None,
            "optional_keys": {SEED: "int: the flow noise seed (same seed, same chunk as Policy.sample_limited)"}}


def parse_request(message, policy) -> tuple[dict, str, str, int | None]:
    """``(obs, embodiment, instruction, seed)`` of a request, or a :class:`RequestError` naming the problem."""
    if isinstance(message, str):
        raise RequestError("expected a binary msgpack frame, got a text frame")
    try:
        request = unpack(message)
    except WireError as err:
        raise RequestError(str(err)) from None
    if not isinstance(request, dict):
        raise RequestError(f"expected a map of observation keys, got {type(request).__name__}")
    served = policy.embodiments
    embodiment = request.get(EMBODIMENT, served[0] if len(served) == 1 else None)
    if embodiment is None:
        raise RequestError(f"missing key '{EMBODIMENT}': this server serves {served}; name one")
    if embodiment not in served:
        raise RequestError(f"unknown embodiment {embodiment!r}; this server serves {served}")
    spec = policy.processor.embodiments[embodiment]
    allowed = {"images", "state", PROMPT, EMBODIMENT, SEED}
    unknown = sorted(map(str, set(request) - allowed))
    if unknown:
        raise RequestError(f"unknown key(s) {unknown}; a request has {sorted(allowed)} (see the metadata's "
                           f"observation_spec for '{embodiment}')")
    prompt = request.get(PROMPT)
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError(f"'{PROMPT}' must be a non-empty string (the instruction), got {prompt!r:.60}")
    seed = request.get(SEED)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise RequestError(f"'{SEED}' must be a non-negative integer, got {seed!r:.60}")
    state = request.get("state")
    if spec.state_dim and state is not None and np.asarray(state).dtype.kind != "f":
        raise RequestError(f"'state' has dtype {np.asarray(state).dtype}, expected float32")
    try:
        validate_observation(request, spec)
    except ObservationError as err:
        raise RequestError(str(err)) from None
    return request, embodiment, prompt, None if seed is None else int(seed)


@dataclass
class _Pending:
    request: tuple
    received: float
    future: asyncio.Future
    queued_ms: float = field(default=0.0)


class PolicyServer:
    """The websocket server: one handler per client, one batching worker in front of the model."""

    def __init__(self, policy, policy_dir: str, batch_window_ms: float = 5.0, max_batch: int = 8):
        self.policy = policy
        self.metadata = pack(server_metadata(policy, policy_dir))
        self.window_s = batch_window_ms / 1e3
        self.max_batch = max_batch
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="policy")
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        await connection.send(self.metadata)
        previous_total_ms = None
        try:
            async for message in connection:
                start = time.perf_counter()
                try:
                    request = parse_request(message, self.policy)
                except RequestError as err:
                    await connection.send(f"vla-stack serve: bad request: {err}")
                    continue
                pending = _Pending(request, start, asyncio.get_running_loop().create_future())
                await self.queue.put(pending)
                try:
                    chunks, timing = await pending.future
                except Exception as err:  # a failure of the model call: reported, the server keeps serving
                    await connection.send(f"vla-stack serve: internal error ({type(err).__name__}: {err})")
                    continue
                timing["queue_ms"] = pending.queued_ms
                if previous_total_ms is not None:
                    timing["prev_total_ms"] = previous_total_ms
                await connection.send(pack({"actions": chunks.chunks[0], "embodiment": request[1],
                                            "clipped": chunks.clipped, "nonfinite": chunks.nonfinite,
                                            "server_timing": timing}))
                previous_total_ms = (time.perf_counter() - start) * 1e3
        except ConnectionClosed:
            pass

    async def batcher(self) -> None:
        """Take the first waiting request, gather others for up to the window, run them as one batch."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.window_s
            while len(items) < self.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except TimeoutError:
                    break
            start = time.perf_counter()
            for item in items:
                item.queued_ms = (start - item.received) * 1e3
            try:
                out = await loop.run_in_executor(self.model_thread, self.policy.sample_batch,
                                                 [item.request[:3] for item in items],
                                                 [item.request[3] for item in items])
            except Exception as err:
                for item in items:
                    item.future.set_exception(err)
                continue
            infer_ms = (time.perf_counter() - start) * 1e3
            for item, chunks in zip(items, out):
                item.future.set_result((chunks, {"infer_ms": infer_ms, "batch_size": len(items)}))

    async def serve(self, host: str, port: int, on_ready) -> None:
        from websockets.asyncio.server import serve

        try:
            server = await serve(self.handle, host, port, compression=None, max_size=None)
        except OSError as err:
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
        worker = asyncio.create_task(self.batcher())
        async with server:
            on_ready(server.sockets[0].getsockname()[1])
            await server.serve_forever()
        worker.cancel()


def serve(policy: str, host: str = "127.0.0.1", port: int = 8000, batch_window_ms: float = 5.0,
          max_batch: int = 8, decoder: str = "torch", runtime: str = "torch") -> None:
    """Serve a policy over openpi's websocket protocol (msgpack + numpy; metadata on connect).

    Each request is one observation (``images`` {camera: uint8 HxWx3}, ``state``, ``prompt``, and
    ``embodiment`` when several are served; optional ``seed``); each reply the action chunk
    ``actions`` [H, A] in robot units with ``server_timing``. Runs until interrupted.

    Args:
        policy: checkpoint directory (what ``fit`` writes); all its embodiments are served.
        host: interface to listen on (0.0.0.0 for every interface).
        port: TCP port (0: any free port; the one chosen is printed).
        batch_window_ms: how long the first waiting request waits for others to join its batch.
        max_batch: most requests in one model call (1: no batching).
        decoder: "torch" or "onnx" (the exported decoder runs requests one by one).
        runtime: "torch" or "onnxruntime" (the whole exported policy; requests one by one).
    """
    from components.policy import Policy

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be in 0..65535 (0: any free port), got {port}")
    if max_batch < 1:
        raise UsageError(f"--max_batch must be >= 1, got {max_batch}")
    if not 0 <= batch_window_ms <= 10_000:
        raise UsageError(f"--batch_window_ms must be in 0..10000, got {batch_window_ms}")
    if not Path(policy).is_dir():
        raise CheckpointNotFoundError(f"--policy: checkpoint directory '{policy}' does not exist")
    pol = Policy.from_pretrained(policy, decoder=decoder, runtime=runtime)
    server = PolicyServer(pol, policy, batch_window_ms, max_batch)

    def ready(bound: int) -> None:
        print(f"serving {policy} (embodiments {', '.join(pol.embodiments)}; batches of up to {max_batch} "
              f"within {batch_window_ms:g} ms) on ws://{host}:{bound}", flush=True)

    asyncio.run(server.serve(host, port, ready))


@contextlib.contextmanager
def served(policy: str, *options: str, env: dict | None = None, timeout_s: float = 120.0):
    """``vla-stack serve`` in a subprocess on a free port for as long as the block runs; yields its
    ``ws://host:port``. Used by ``bench serve`` and the tests."""
    log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would fill up and block the server
    proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "serve", "--policy", str(policy), "--port", "0",
                             *options], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"vla-stack serve exited ({proc.returncode}): {log.read()[-2000:]}")
            if (found := READY.search(line)):
                break
        else:
            raise RuntimeError(f"vla-stack serve printed no 'serving ... on ws://' line in {timeout_s:g} s")
        yield f"ws://{found['host']}:{found['port']}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
