"""The `sessionquorum` command line without a running node: parsing, --json, exit codes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from sessionquorum.cluster import ClusterError, prepare_cluster_dir
from sessionquorum.cluster._cli import build_parser, main


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_version_prints_the_installed_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0

    assert capsys.readouterr().out.strip() == f"sessionquorum {version('sessionquorum')}"


def test_help_explains_exit_codes_and_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0

    out = capsys.readouterr().out
    assert "3 cluster unavailable" in out and "2 usage or configuration error" in out
    for command in ("init", "up", "down", "status", "node", "config", "sessions"):
        assert f"    {command}" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["sessions", "revoke"],  # neither a principal nor --handle
        ["sessions", "revoke", "alice", "--handle", "h1"],
        ["node", "run", "--node", "n1"],  # no --config
        ["node", "--config", "c.json", "--node", "n1"],  # the old form, before `node run`
        ["up", "--nodes", "4"],
    ],
)
def test_parser_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2

    assert "usage: sessionquorum" in capsys.readouterr().err


def test_parser_json_flag_on_every_printing_command() -> None:
    parser = build_parser()
    for argv in (
        ["init"],
        ["up"],
        ["status"],
        ["down"],
        ["kill", "n1"],
        ["restart", "n1"],
        ["config", "get"],
        ["config", "set", "a=1"],
        ["sessions", "list", "alice"],
        ["sessions", "revoke", "--handle", "h"],
    ):
        assert parser.parse_args([*argv, "--json"]).json is True, argv


def test_parser_sessions_revoke_by_principal_or_handle() -> None:
    parser = build_parser()

    by_principal = parser.parse_args(["sessions", "revoke", "alice", "--data-dir", "/x"])
    by_handle = parser.parse_args(["sessions", "revoke", "--handle", "h1"])

    assert (by_principal.principal, by_principal.handle, by_principal.data_dir) == ("alice", None, Path("/x"))
    assert (by_handle.principal, by_handle.handle) == (None, "h1")


def test_parser_principals_disable_and_enable_take_one_name() -> None:
    parser = build_parser()

    disable = parser.parse_args(["principals", "disable", "alice", "--data-dir", "/x", "--json"])
    enable = parser.parse_args(["principals", "enable", "bob"])

    assert (disable.action, disable.principal, disable.data_dir, disable.json) == (
        "disable",
        "alice",
        Path("/x"),
        True,
    )
    assert (enable.action, enable.principal) == ("enable", "bob")
    with pytest.raises(SystemExit):
        parser.parse_args(["principals", "disable"])


def test_init_json_lists_nodes_with_kernel_ports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--data-dir", str(tmp_path), "--json"]) == 0

    (out,) = _json_lines(capsys.readouterr().out)
    assert out["created"] is True and out["config"] == str(tmp_path.resolve() / "cluster.json")
    nodes = out["nodes"]
    assert isinstance(nodes, list) and [n["id"] for n in nodes] == ["n1", "n2", "n3"]
    assert all(n["grpc"].startswith("127.0.0.1:") for n in nodes)


def test_init_hosts_fixed_ports_addresses_and_certificate_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["init", "--data-dir", str(tmp_path), "--hosts", "10.9.0.1", "10.9.0.1", "db3.internal"]

    assert main([*argv, "--raft-port", "7100", "--grpc-port", "7200", "--json"]) == 0

    (out,) = _json_lines(capsys.readouterr().out)
    assert [(n["raft"], n["grpc"]) for n in out["nodes"]] == [  # type: ignore[attr-defined]
        ("10.9.0.1:7100", "10.9.0.1:7200"),
        ("10.9.0.1:7101", "10.9.0.1:7201"),  # second node on the same host: base + 1
        ("db3.internal:7100", "db3.internal:7200"),
    ]
    san = x509.load_pem_x509_certificate((tmp_path / "tls" / "n3.pem").read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "db3.internal" in names.get_values_for_type(x509.DNSName)
    n1 = x509.load_pem_x509_certificate((tmp_path / "tls" / "n1.pem").read_bytes()).extensions
    ips = n1.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.9.0.1") in ips


def test_init_same_again_reuses_other_ports_refused(tmp_path: Path) -> None:
    prepare_cluster_dir(tmp_path, 3, hosts=["10.9.0.1"] * 3, base_ports=(7100, 7200))

    assert not prepare_cluster_dir(tmp_path, 3, hosts=["10.9.0.1"] * 3, base_ports=(7100, 7200)).created
    with pytest.raises(ClusterError, match="other ports"):
        prepare_cluster_dir(tmp_path, 3, hosts=["10.9.0.1"] * 3, base_ports=(8100, 8200))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hosts", "10.0.0.1", "10.0.0.2", "--nodes", "3"], "contradicts the 2 --hosts"),
        (["--hosts", "bad_host!", "10.0.0.2", "10.0.0.3"], "IP addresses or DNS names"),
        (["--raft-port", "7100"], "both --raft-port and --grpc-port"),
        (["--hosts", "10.0.0.1", "10.0.0.1", "--raft-port", "7100", "--grpc-port", "7101"], "overlap"),
    ],
)
def test_init_bad_addresses_exit_2_and_write_nothing(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--data-dir", str(tmp_path / "c"), *extra]) == 2

    assert message in capsys.readouterr().err
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_status_json_nothing_running_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_cluster_dir(tmp_path, 3)

    assert main(["status", "--data-dir", str(tmp_path), "--json"]) == 3

    (out,) = _json_lines(capsys.readouterr().out)
    assert out["agreed_leader"] is None
    assert [(n["id"], n["alive"], n["answers"]) for n in out["nodes"]] == [  # type: ignore[attr-defined]
        ("n1", "no", False),
        ("n2", "no", False),
        ("n3", "no", False),
    ]


def test_down_json_nothing_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_cluster_dir(tmp_path, 3)

    assert main(["down", "--data-dir", str(tmp_path), "--json"]) == 0

    assert _json_lines(capsys.readouterr().out) == [{"stopped": {}}]


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "get"],
        ["sessions", "list", "alice", "--timeout", "0.5"],
        ["sessions", "revoke", "bob", "--timeout", "0.5"],
    ],
)
def test_commands_needing_a_cluster_nothing_running_exit_3(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_cluster_dir(tmp_path, 3)

    assert main([*argv, "--data-dir", str(tmp_path)]) == 3

    assert capsys.readouterr().err.startswith("sessionquorum: error: ")


def test_error_with_json_is_a_json_object_and_one_stderr_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "list", "alice", "--data-dir", str(tmp_path / "none"), "--json"]) == 2

    captured = capsys.readouterr()
    (out,) = _json_lines(captured.out)
    assert "no cluster in" in str(out["error"])
    assert captured.err.count("\n") == 1


def test_module_and_script_share_the_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sessionquorum.cluster", "status", "--data-dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith("no cluster in")
