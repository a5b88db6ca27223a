"""How a rendered MiniWorld scene looks: room textures, lighting and the camera's field of view.

A :class:`Look` is drawn per episode by :func:`sample_look` from the pools of a split of
``configs/render/video.yaml`` (``components.video_data``), so training videos do not tie the model to one
appearance. A scene applies it where MiniWorld compiles its static scene
(``components.envs.wheeled.OwnDisplayList``): the lighting goes into the display list, the field of view
onto the agent; the wheeled env also builds its rooms with the look's textures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """One episode's appearance. Textures are MiniWorld names, cycled over the rooms (None: the scene's own);
    ``light_at`` places the point light at fractions (u, v) of the scene's floor extent, ``light_height_m`` up."""

    wall_tex: tuple[str, ...] | None
    floor_tex: tuple[str, ...] | None
    ceil_tex: str | None
    light_ambient: RGB
    light_diffuse: RGB
    light_at: tuple[float, float]
    light_height_m: float
    fov_y_deg: float

    def apply(self, env) -> None:
        """Set ``env``'s (a ``MiniWorldEnv`` after its world is generated) lights and camera to this look."""
        u, v = self.light_at
        env.light_pos = [float(env.min_x + u * (env.max_x - env.min_x)), float(self.light_height_m),
                         float(env.min_z + v * (env.max_z - env.min_z))]
        env.light_ambient = [float(c) for c in self.light_ambient]
        env.light_color = [float(c) for c in self.light_diffuse]
        env.agent.cam_fov_y = float(self.fov_y_deg)

    def describe(self) -> dict:
        """JSON-ready fields (for a store's per-episode record)."""
        return {"wall_tex": list(self.wall_tex or []), "floor_tex": list(self.floor_tex or []),
                "ceil_tex": self.ceil_tex, "light_ambient": list(self.light_ambient),
                "light_diffuse": list(self.light_diffuse), "light_at": list(self.light_at),
                "light_height_m": self.light_height_m, "fov_y_deg": self.fov_y_deg}


def _grey(rng: np.random.Generator, level: tuple[float, float], tint: float) -> RGB:
    g = rng.uniform(*level)
    return tuple(float(np.clip(g + rng.uniform(-tint, tint), 0.0, 1.0)) for _ in range(3))


def sample_look(rng: np.random.Generator, light: dict, fov_y_deg: tuple[float, float], rooms: int,
                wall_textures=None, floor_textures=None, ceiling_textures=None) -> Look:
    """A look for a scene of ``rooms`` rooms: one wall and floor texture per room drawn from the pools (None:
    keep the scene's own), a ceiling, grey lights of levels ``light["ambient"]``/``light["diffuse"]`` tinted by
    ``light["tint"]``, the light at a uniform place at ``light["height_m"]``, and a uniform vertical field of view."""
    def pick(pool, n):
        return None if not pool else tuple(str(t) for t in rng.choice(pool, size=n))
    ceiling = pick(ceiling_textures, 1)
    return Look(wall_tex=pick(wall_textures, rooms), floor_tex=pick(floor_textures, rooms),
                ceil_tex=ceiling[0] if ceiling else None,
                light_ambient=_grey(rng, light["ambient"], light["tint"]),
                light_diffuse=_grey(rng, light["diffuse"], light["tint"]),
                light_at=(float(rng.uniform()), float(rng.uniform())),
                light_height_m=float(rng.uniform(*light["height_m"])),
                fov_y_deg=float(rng.uniform(*fov_y_deg)))
