"""Meshes and scenes from elsewhere: bad data is one clear error, files never read outside their folder,
and valid files in older encodings load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ffrun.data.meshes import load_mesh, normalise
from ffrun.data.scenes import load_blender
from ffrun.util.errors import FfrunError

TETRA_FACES = "f 1 2 3\nf 1 4 2\nf 1 3 4\nf 2 4 3\n"


def write_obj(path, vertices: str, comment: bytes = b"") -> str:
    path.write_bytes(comment + vertices.encode() + TETRA_FACES.encode())
    return str(path)


def test_nan_vertices_are_refused_not_dropped(tmp_path):
    # trimesh's processing drops the faces of a NaN vertex (3 of these 4), leaving an open sliver
    path = write_obj(tmp_path / "nan.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 0 1\n")
    with pytest.raises(FfrunError, match=r"1 of 4 vertices have NaN or infinite coordinates \(the first is vertex 3\)"):
        load_mesh(path)
    with pytest.raises(FfrunError, match="NaN or infinite"):
        load_mesh(write_obj(tmp_path / "inf.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 inf 1\n"))


@pytest.mark.parametrize("vertices,axis", [("v 1 1 1\nv 1 1 1\nv 1 1 1\nv 1 1 1\n", "x"),
                                           ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\n", "z")])
def test_meshes_without_volume_are_refused(tmp_path, vertices, axis):
    path = write_obj(tmp_path / "flat.obj", vertices)
    with pytest.raises(FfrunError, match=f"no extent along {axis}"):
        load_mesh(path)


def test_zero_extent_mesh_exits_2_before_the_winding_number(run_cli, tmp_path):
    """A single-point mesh made igl's winding number segfault (exit 139) on the NaNs of the normalisation."""
    write_obj(tmp_path / "point.obj", "v 1 1 1\nv 1 1 1\nv 1 1 1\nv 1 1 1\n")
    r = run_cli("task=shape", "task.mesh=point.obj", "trainer.steps=1", "trainer.progress=false", "device=cpu")
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "no extent along x" in r.stderr and "Traceback" not in r.stderr


def test_normalise_refuses_what_it_cannot_scale():
    import trimesh

    point = trimesh.Trimesh(np.ones((4, 3)), [[0, 1, 2], [0, 3, 1]], process=False)
    with pytest.raises(FfrunError, match="no extent"):
        normalise(point)


@pytest.mark.parametrize("suffix", [".obj", ".off", ".ply"])
def test_latin1_comment_in_a_valid_mesh_loads(tmp_path, suffix):
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    if suffix == ".obj":
        data = b"# mod\xe8le de t\xe9st\n" + b"".join(b"v %g %g %g\n" % tuple(v) for v in verts) + TETRA_FACES.encode()
    elif suffix == ".off":
        data = (b"OFF\n# caf\xe9\n4 4 0\n" + b"".join(b"%g %g %g\n" % tuple(v) for v in verts)
                + b"".join(b"3 %d %d %d\n" % tuple(f) for f in faces))
    else:
        data = (b"ply\nformat ascii 1.0\ncomment caf\xe9\nelement vertex 4\nproperty float x\nproperty float y\n"
                b"property float z\nelement face 4\nproperty list uchar int vertex_indices\nend_header\n"
                + b"".join(b"%g %g %g\n" % tuple(v) for v in verts)
                + b"".join(b"3 %d %d %d\n" % tuple(f) for f in faces))
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(data)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    mesh = load_mesh(path)
    assert len(mesh.faces) == 4 and mesh.is_watertight
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(verts, axis=0))


# ---- NeRF scenes -------------------------------------------------------------------------------------


def scene(tmp_path, file_path: str, fov=0.69):
    root = tmp_path / "scene"
    (root / "train").mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(root / "train" / "r_0.png")
    frame = {"file_path": file_path, "transform_matrix": np.eye(4).tolist()}
    text = json.dumps({"camera_angle_x": fov, "frames": [frame]})
    (root / "transforms_train.json").write_text(text)
    return root


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_file_paths_that_leave_the_scene_folder_are_refused(tmp_path, kind):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGBA", (4, 4), (255, 0, 0, 255)).save(secret)  # a readable image: before, it was loaded
    if kind == "dotdot":
        root = scene(tmp_path, "../outside/secret")
    elif kind == "absolute":
        root = scene(tmp_path, str(secret))
    else:
        root = scene(tmp_path, "./train/link")
        (root / "train" / "link.png").symlink_to(secret)
    with pytest.raises(FfrunError, match="leads outside the scene folder") as e:
        load_blender(root, "train")
    assert "\n" not in str(e.value)
    assert load_blender(scene(tmp_path, "./train/r_0"), "train").images.shape == (1, 4, 4, 3)  # inside: fine


def test_file_path_refusal_is_one_line_and_exit_2(run_cli, tmp_path):
    root = scene(tmp_path, "../../../etc/hostname")
    for split in ("test", "val"):
        (root / f"transforms_{split}.json").write_text((root / "transforms_train.json").read_text())
    r = run_cli("task=nerf", f"task.data={root}", "trainer.steps=1", "trainer.progress=false", "device=cpu")
    assert r.returncode == 2 and "leads outside the scene folder" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("fov", [0, -0.5, "NaN", 3.5])
def test_camera_angle_that_is_not_a_field_of_view_is_refused(tmp_path, fov):
    root = scene(tmp_path, "./train/r_0")
    meta = root / "transforms_train.json"
    meta.write_text(meta.read_text().replace('"camera_angle_x": 0.69', f'"camera_angle_x": {fov}'))
    with pytest.raises(FfrunError, match="camera_angle_x=.* is not a field of view"):
        load_blender(root, "train")

