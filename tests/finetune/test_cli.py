import json

import yaml

from overspec.cli.main import main
from overspec.data.biometric.attack_list import AttackProtocol, AttackSample, write_protocol
from tests.conftest import MICRO_CFG
from tests.finetune._toy import attack_split


def _micro_preset(tmp_path, checkpoint):
    (tmp_path / "micro-clip.json").write_text(json.dumps(MICRO_CFG))
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump({"name": "micro-base", "architecture": "micro-clip", "config_file": "micro-clip.json",
                                    "weights": str(checkpoint)}))
    return path


def _mad_protocol(tmp_path):
    samples = []
    for split, n, seed in (("train", 16, 0), ("dev", 8, 1)):
        images = attack_split(n, seed=seed, split=split)
        for i in range(n):
            rel = f"{split}/{i}.png"
            (tmp_path / split).mkdir(exist_ok=True)
            images.read(i).save(tmp_path / rel)
            label = "bona_fide" if images.labels[i] == 1 else "attack"
            samples.append(AttackSample(rel, label, "" if label == "bona_fide" else "blend", rel, f"s{i}", split, "toy"))
    return write_protocol(tmp_path / "protocol.csv", AttackProtocol("toy", tmp_path, tuple(samples), task="mad"))


def test_finetune_command_trains_and_writes_a_preset(tmp_path, micro_checkpoint, capsys):
    base = _micro_preset(tmp_path, micro_checkpoint)
    out = tmp_path / "out"
    code = main(["finetune", "madation", "--base", str(base), "--data", str(_mad_protocol(tmp_path)), "--steps", "3",
                 "--set", "batch_size=4", "--set", "lora.rank=2", "--set", "train_transform.resize=16",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    assert str(out / "model.yaml") in capsys.readouterr().out
    preset = yaml.safe_load((out / "model.yaml").read_text())
    assert preset["name"] == "micro-base-mad" and preset["base"] == "micro-base" and preset["specialisation"] == "mad"
    assert preset["config_file"].endswith("micro-clip.json") and preset["head"].endswith("head.safetensors")
    record = json.loads((out / "finetune.json").read_text())
    assert record["config"]["steps"] == 3 and record["config"]["lora"]["rank"] == 2
    assert 0.0 <= record["validation"]["eer"] <= 1.0


def test_finetune_command_reports_unknown_override_keys(tmp_path, micro_checkpoint, capsys):
    code = main(["finetune", "madation", "--base", "tiny-s", "--set", "optim.lr_haed=1", "--output", str(tmp_path)])
    assert code == 2
    assert "did you mean 'lr_head'" in capsys.readouterr().err
