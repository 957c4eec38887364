"""`otatool demo`, the README's main job, tells the whole update in a few lines."""
import subprocess
import sys


def test_the_demo_updates_the_emulated_board_from_1_to_2_and_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "otatool", "demo", "--size", "128",
                           "--keep", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.replace("\r", "\n").splitlines() if line.strip()]
    steps = [line for line in lines if line.startswith("[")]
    assert [s[:5] for s in steps] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert "VALID" in steps[-1]
    assert lines[-1] == "done: the board runs ota-demo 2.0.0"
    assert any("download: 100%" in line for line in lines)
    assert (tmp_path / "demo" / "board" / "flash.bin").exists()
