from modelyard.reference_demo import reference_demo
from tests.conftest import run_cli


def test_numpy_mlp_lands_within_two_points_of_the_pytorch_trainer():
    r = reference_demo()  # the CLI defaults: 64 hidden units, 30 epochs, seed 0
    assert r["numpy_accuracy"] > 0.9 and r["torch_accuracy"] > 0.9
    assert abs(r["difference_points"]) <= 2.0


def test_cli_prints_both_and_rejects_bad_widths(tmp_path):
    out = run_cli("reference-demo", "--epochs", "2", "--hidden-sizes", "16", "--output", tmp_path, check=True).stdout
    assert "NumPy   (modelyard.reference): test accuracy" in out and "PyTorch (modelyard train)" in out
    assert "PyTorch run:" in out and any(tmp_path.iterdir())
    bad = run_cli("reference-demo", "--hidden-sizes", "64,x")
    assert bad.returncode == 2 and "comma-separated" in bad.stderr
