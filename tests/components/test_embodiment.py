import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components import action_space
from components.embodiment import EmbodimentError, Embodiments, load_spec, spec_from_dict, spec_to_dict

SPECS = Embodiments.from_config_dir()


def test_every_shipped_embodiment_loads_with_expected_widths():
    widths = {s.name: (s.action_dim, s.chunk_horizon) for s in SPECS}
    assert widths == {"aloha": (14, 50), "fetch": (4, 10), "wheeled": (4, 8), "wheeled_nav": (4, 8), "video": (4, 8)}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["aloha", "fetch", "wheeled", "wheeled_nav", "video"]), data=st.data())
def test_pad_then_unpad_is_exact(name, data):
    spec = SPECS[name]
    horizon = data.draw(st.integers(1, spec.chunk_horizon))
    values = np.asarray(data.draw(st.lists(
        st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=horizon * spec.action_dim,
        max_size=horizon * spec.action_dim)), np.float32).reshape(horizon, spec.action_dim)
    padded = action_space.pad(values, spec.action_indices)
    assert padded.shape == (horizon, action_space.ACTION_DIM)
    assert np.array_equal(action_space.unpad(padded, spec.action_indices), values)
    assert not padded[:, ~spec.action_mask].any()


def test_aloha_and_wheeled_use_disjoint_canonical_slots():
    assert not (SPECS["aloha"].action_mask & SPECS["wheeled"].action_mask).any()
    assert (SPECS["wheeled"].action_mask == SPECS["video"].action_mask).all()


def test_prompt_is_generated_from_the_spec():
    spec = SPECS["aloha"]
    prompt = spec.prompt()
    for slot in spec.action_slots:
        assert slot.name in prompt
    raw = spec_to_dict(spec)
    raw["action_slots"][0]["name"] = "renamed_waist"
    assert "renamed_waist" in spec_from_dict(raw).prompt()


def test_unknown_embodiment_names_it_and_the_known_ones():
    with pytest.raises(EmbodimentError, match=r"unknown embodiment\(s\) \['spot'\].*aloha"):
        Embodiments.from_config_dir(["spot"])
    with pytest.raises(EmbodimentError, match="unknown embodiment 'spot'; this model knows"):
        SPECS["spot"]


def test_wrong_width_names_embodiment_and_file():
    with pytest.raises(EmbodimentError, match=r"data.zarr: 'action' has width 7 but embodiment 'fetch'.*4 action slots"):
        SPECS["fetch"].check_width("action", 7, "data.zarr")


def test_out_of_range_value_names_embodiment_slot_and_file():
    values = np.zeros((5, 4), np.float32)
    values[3, 2] = 1.7
    with pytest.raises(EmbodimentError, match=r"demo.zarr: 'action' value 1.7 in slot 'dz' is outside the range "
                                              r"\[-1, 1\] declared by embodiment 'fetch'"):
        SPECS["fetch"].check_range("action", values, "demo.zarr")


def test_spec_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nrobot: r\naction_kind: teleport\ncontrol_hz: 1\nchunk_horizon: 4\n"
                    "cameras: []\naction_slots: []\n")
    with pytest.raises(EmbodimentError, match=r"bad.yaml: action_kind 'teleport' is not one of"):
        load_spec(path)
    path.write_text("name: bad\nrobot: r\naction_kind: ee_delta\ncontrol_hz: 1\nchunk_horizon: 4\ncameras: []\n"
                    "action_slots: [{name: a, canonical: warp_drive, unit: m, low: 0, high: 1}]\n")
    with pytest.raises(EmbodimentError, match=r"bad.yaml: action slots: unknown canonical slot\(s\) \['warp_drive'\]"):
        load_spec(path)


def test_embodiments_round_trip_through_checkpoint_yaml(tmp_path):
    SPECS.save(tmp_path / "embodiments.yaml")
    loaded = Embodiments.load(tmp_path / "embodiments.yaml")
    for spec in SPECS:
        assert loaded[spec.name].prompt() == spec.prompt()
        assert (loaded[spec.name].action_indices == spec.action_indices).all()
        assert loaded[spec.name] == spec  # every field, the optional past_frame_s and instruction included


def test_the_video_view_is_declared_in_its_spec():
    video = SPECS["video"]
    assert [(c.name, c.height, c.width) for c in video.cameras] == [("front", 90, 160), ("past", 90, 160)]
    assert video.past_frame_s == 0.5 and video.instruction and not video.state_slots
    assert "Camera past is camera front 0.5 s earlier." in video.prompt()
    assert all(s.past_frame_s is None and "earlier" not in s.prompt() for s in SPECS if s.name != "video")
    raw = spec_to_dict(video)
    with pytest.raises(EmbodimentError, match=r"<v>: past_frame_s must be a number of seconds > 0, got -1"):
        spec_from_dict({**raw, "past_frame_s": -1}, source="<v>")
    with pytest.raises(EmbodimentError, match=r"<v>: past_frame_s needs a camera named 'past' after the first .*"
                                              r"cameras are \['front'\]"):
        spec_from_dict({**raw, "cameras": raw["cameras"][:1]}, source="<v>")
