"""The pipeline's stage registry against dvc.yaml, its params checks, and its pure helpers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from amas.errors import ConfigError
from amas.pipeline.params import CleanParams, FeaturesParams, load_section
from amas.pipeline.runner import check_params
from amas.pipeline.stages import CLEAN, FEATURES, LINEAGE, RAW, STAGES, _ip_networks, propagate_pii

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_dvc_yaml_lists_the_registry_stages_in_order_with_their_data() -> None:
    assert list(DVC_YAML) == list(STAGES)
    for name, stage in STAGES.items():
        entry = DVC_YAML[name]
        assert entry["cmd"] == f"python -m amas.pipeline stage {name}"
        assert entry["params"] == [name], "one params.yaml section per stage"
        assert entry["outs"] == list(stage.outs)
        data_deps = [d for d in entry["deps"] if d.startswith("data/")]
        assert data_deps == list(stage.deps), f"{name}: dvc.yaml data deps differ from the registry"
        assert "amas/pipeline/stages.py" in entry["deps"], f"{name}: the stage code must be a dep"
        for dep in entry["deps"]:
            assert (REPO / dep).exists() or dep.startswith("data/"), f"{name}: {dep} does not exist"


def test_every_dataset_has_a_suite_listed_as_a_dep_of_the_stage_that_checks_it() -> None:
    checked_by = {**dict.fromkeys(RAW, "validate"), **dict.fromkeys(CLEAN, "clean"),
                  **dict.fromkeys(FEATURES, "features")}
    for dataset, stage in checked_by.items():
        suite = f"expectations/{dataset}.json"
        assert (REPO / suite).is_file(), f"no suite for {dataset}"
        assert suite in DVC_YAML[stage]["deps"], f"{stage} must re-run when {suite} changes"


def test_column_lineage_covers_every_derived_column() -> None:
    assert set(LINEAGE) == set(CLEAN) | set(FEATURES)
    for dataset, columns in LINEAGE.items():
        for column, sources in columns.items():
            assert sources, f"{dataset}.{column} has no source"


def test_pii_follows_copies_and_transformations_but_not_aggregates() -> None:
    pii = {"data/raw/people.parquet": {"email": "email", "full_name": "person_name"},
           "data/raw/events.parquet": {"ip_address": "ip_address"},
           "data/clean/events_clean.parquet": {"ip_network": "ip_address"}}
    assert propagate_pii("people_clean", pii) == {"email": "email", "full_name": "person_name"}
    assert propagate_pii("events_clean", pii) == {"ip_network": "ip_address"}
    assert propagate_pii("subject_activity", pii) == {}  # distinct_networks is a count


def test_ip_addresses_become_networks() -> None:
    addresses = pa.chunked_array([["203.0.113.77", "2001:db8:12:34::9", "198.51.100.1"]])
    assert _ip_networks(addresses, 24, 48).to_pylist() == ["203.0.113.0/24", "2001:db8:12::/48", "198.51.100.0/24"]
    assert _ip_networks(addresses, 16, 32).to_pylist() == ["203.0.0.0/16", "2001:db8::/32", "198.51.0.0/16"]


def test_committed_params_load_for_every_stage() -> None:
    check_params(REPO)
    assert load_section(REPO / "params.yaml", "features", FeaturesParams).failed_login_types == ["login_failed"]


@pytest.mark.parametrize(("section", "text", "message"), [
    ("clean", "clean:\n  ipv4_prefix: 32\n", "clean.ipv4_prefix: Input should be less than or equal to 30 (got 32)"),
    ("clean", "clean:\n  ipv4_prefx: 24\n", "clean.ipv4_prefx: unknown setting; valid: ipv4_prefix, ipv6_prefix"),
    ("clean", "clean: [1, 2]\n", "'clean:' must be a mapping"),
    ("clean", "clean:\n  ipv4_prefix: [\n", "not valid YAML at line"),
])
def test_a_bad_params_section_is_one_line_naming_the_field(tmp_path: Path, section: str, text: str,
                                                           message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_section(path, section, CleanParams)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_section_takes_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("generate: {rows: 100, seed: 1}\n", encoding="utf-8")
    assert load_section(path, "clean", CleanParams) == CleanParams()


def test_the_fast_ipv6_network_equals_ipaddress() -> None:
    import ipaddress
    import random

    from amas.pipeline.stages import v6_network

    rng = random.Random(7)
    addresses = ["::", "::1", "2001:db8::", "2001:db8:0:1::", "2001:0:0:1::1", "::ffff:192.0.2.1", "::192.0.2.1",
                 "64:ff9b::192.0.2.33", "fe80::1%eth0", "2001:DB8::ABCD", "1:0:0:1:0:0:0:1", "0:0:1::"]
    for _ in range(3000):
        groups = [rng.choice([0, 0, 0, rng.randrange(1 << 16)]) for _ in range(8)]
        addresses.append(str(ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))))
        addresses.append(":".join(f"{g:x}" for g in groups))  # uncompressed spelling
    for prefix in (16, 20, 32, 47, 48, 56, 64, 96, 112, 128):
        for address in addresses:
            try:
                expected = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
            except ValueError:
                with pytest.raises(ValueError):
                    v6_network(address, prefix)
                continue
            assert v6_network(address, prefix) == expected, (address, prefix)
