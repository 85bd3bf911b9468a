"""`cognopt assets build SRC DST [--upload URI]`."""

import json

from click.testing import CliRunner

from cognopt_ray.cli import main


def test_assets_build_and_upload(tmp_path):
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("<html>" + "<p>cognopt</p>" * 200 + "</html>")
    dst, bucket = tmp_path / "dist", tmp_path / "bucket"
    r = CliRunner().invoke(main, ["assets", "build", str(src), str(dst), "--upload", f"file://{bucket}"])
    assert r.exit_code == 0, r.output
    assert "1 assets built" in r.output and "uploaded" in r.output
    manifest = json.loads((dst / "manifest.json").read_text())
    entry = manifest["files"]["index.html"]
    assert (bucket / entry["path"]).is_file() and (bucket / entry["encodings"]["gzip"]["path"]).is_file()


def test_assets_build_refuses_bad_input(tmp_path):
    r = CliRunner().invoke(main, ["assets", "build", str(tmp_path / "missing"), str(tmp_path / "dst")])
    assert r.exit_code != 0
    src = tmp_path / "site"
    src.mkdir()
    r = CliRunner().invoke(main, ["assets", "build", str(src), str(src / "inside")])
    assert r.exit_code != 0 and "inside" in r.output
