"""Bad flags and bad files are clear errors: exit 2 for usage (a flag, a value on the command
line), 1 for a problem (a file, a network that does not exist, an operation that failed),
a message naming the thing and the fix, never a traceback (the ``cli`` fixtures assert
that on every run). Conflists: what ``net create`` writes, from flags and from files."""

from __future__ import annotations

import json

import pytest


def test_version_and_help(cli_offline):
    r = cli_offline("--version", locations=False, check=0)
    assert r.out.startswith("splice ")
    assert cli_offline(locations=False, check=2).rc == 2  # no command: help on stderr, usage code
    assert "create" in cli_offline("net", locations=False, check=2).out  # no action: the actions listed
    assert "ls" in cli_offline("ipam", locations=False, check=2).out


@pytest.mark.parametrize("argv, needle", [
    (["net", "create", "x", "--driver", "vxlan", "--subnet", "10.0.0.0/24"], "invalid choice: 'vxlan'"),
    (["net", "create", "x", "--subnet", "10.0.0.0/24"], "--driver is required"),
    (["net", "create", "--driver", "bridge", "--subnet", "10.0.0.0/24"], "NAME is required"),
    (["net", "create", "x", "--driver", "bridge"], "a subnet is required"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.1/24"], "subnet '10.0.0.1/24' is not a CIDR"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/24", "--gateway", "10.0.1.1"],
     "gateway 10.0.1.1 is in none of the subnets"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/24", "-o", "mtu=abc"], "mtu"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/24", "-o", "ipMasq=yes"], "ipMasq"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/24", "-o", "noequals"], "expected KEY=VALUE"),
    (["net", "create", "x", "--driver", "macvlan", "--subnet", "10.0.0.0/24", "-o", "mode=fast"], "mode"),
    (["net", "create", "bad/name", "--driver", "bridge", "--subnet", "10.0.0.0/24"], "network name"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/30", "-o", "ipam.rangeStart=10.0.0.9"],
     "rangeStart"),
    (["net", "create", "x", "--driver", "bridge", "--subnet", "10.0.0.0/24", "--cni-version", "9.9"], "cniVersion"),
    (["attach", "x"], "--netns"),
    (["attach", "x", "--netns", "n", "-p", "80"], None),  # the network is looked up first: 1, below
    (["ipam", "release", "x"], "one of the arguments --ip --container-id is required"),
    (["net", "ls", "--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2(cli_offline, argv, needle):
    r = cli_offline(*argv)
    if needle is None:
        assert r.rc == 1 and "no network 'x'" in r.err
        return
    assert r.rc == 2, (r.rc, r.out, r.err)
    assert needle in r.err, r.err


def test_bad_publish_flag(cli_offline):
    cli_offline("net", "create", "web", "--driver", "bridge", "--subnet", "10.97.0.0/24", check=0)
    for spec, needle in (("80", "expected [HOSTIP:]HOSTPORT:CONTAINERPORT"), ("8080:80/icmp", "protocol 'icmp'"),
                         ("70000:80", "ports are 1-65535")):
        r = cli_offline("attach", "web", "--netns", "/proc/self/ns/net", "-p", spec, check=2)
        assert needle in r.err


def test_unknown_network_names_the_fix(cli_offline):
    cli_offline("net", "create", "web", "--driver", "bridge", "--subnet", "10.97.0.0/24", check=0)
    for argv in (["net", "inspect", "nope"], ["net", "rm", "nope"], ["ipam", "ls", "nope"], ["doctor", "nope"],
                 ["detach", "nope", "--netns", "x"], ["check", "nope", "--netns", "x"], ["status", "nope"],
                 ["gc", "nope"]):
        r = cli_offline(*argv, check=1)
        assert "no network 'nope'" in r.err and "networks there: web" in r.err and "splice net create" in r.err


def test_create_writes_a_validated_conflist(cli_offline):
    c = cli_offline
    r = c("net", "create", "web", "--driver", "bridge", "--subnet", "10.97.0.0/24", "--subnet", "fd97::/64",
          "--gateway", "fd97::1", "-o", "mtu=1400", "-o", "ipMasq=false", "-o", "ipam.dataDir=/tmp/x", check=0)
    path = c.config_dir / "web.conflist"
    assert r.out.strip() == str(path)
    conf = json.loads(path.read_text())
    main, pm = conf["plugins"]
    assert conf["name"] == "web" and conf["cniVersion"] == "1.0.0"
    assert main["type"] == "splice-bridge" and main["bridge"] == "br-web" and main["mtu"] == 1400
    assert main["ipMasq"] is False and main["isDefaultGateway"] is True
    assert main["ipam"] == {"type": "splice-ipam", "dataDir": "/tmp/x",
                            "ranges": [[{"subnet": "10.97.0.0/24"}], [{"subnet": "fd97::/64", "gateway": "fd97::1"}]]}
    assert pm == {"type": "splice-portmap", "capabilities": {"portMappings": True}}
    # the same name again: refused, naming the file and the two ways out
    r = c("net", "create", "web", "--driver", "bridge", "--subnet", "10.96.0.0/24", check=1)
    assert str(path) in r.err and "splice net rm web" in r.err and "--force" in r.err
    c("net", "create", "web", "--driver", "bridge", "--subnet", "10.96.0.0/24", "--force", check=0)
    # a long name gets a hashed bridge name; --dry-run writes nothing
    r = c("net", "create", "a-very-long-network-name", "--driver", "bridge", "--subnet", "10.95.0.0/24", "--dry-run",
          check=0)
    assert json.loads(r.out)["plugins"][0]["bridge"].startswith("br-") and len(json.loads(r.out)["plugins"][0]["bridge"]) == 15
    assert not (c.config_dir / "a-very-long-network-name.conflist").exists()
    # macvlan: no portmap, a default route via the gateway
    c("net", "create", "mv", "--driver", "macvlan", "--subnet", "10.94.0.0/24", "--gateway", "10.94.0.254",
      "-o", "master=eth9.10", "-o", "mode=private", check=0)
    mv = json.loads((c.config_dir / "mv.conflist").read_text())
    assert [p["type"] for p in mv["plugins"]] == ["splice-macvlan"]
    assert mv["plugins"][0]["master"] == "eth9.10" and mv["plugins"][0]["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    r = c("net", "ls", check=0)
    assert [ln.split()[0] for ln in r.out.splitlines()] == ["NAME", "mv", "web"]
    # SPLICE_CONFIG_DIR instead of --config-dir
    r = c("net", "ls", "--json", locations=False, env={"SPLICE_CONFIG_DIR": str(c.config_dir)}, check=0)
    assert {n["name"] for n in r.json} == {"mv", "web"}
    c("net", "rm", "mv", check=0)
    assert not (c.config_dir / "mv.conflist").exists()


def test_create_from_yaml_and_json_files(cli_offline, tmp_path):
    c = cli_offline
    y = tmp_path / "net.yaml"
    y.write_text("name: yweb\ndriver: bridge\nsubnet: 10.93.0.0/24\ngateway: 10.93.0.254\n"
                 "options:\n  ipMasq: false\n  bridge: ybr0\nipam:\n  dataDir: /tmp/y\n")
    c("net", "create", "-f", str(y), check=0)
    conf = json.loads((c.config_dir / "yweb.conflist").read_text())
    assert conf["plugins"][0]["bridge"] == "ybr0" and conf["plugins"][0]["ipMasq"] is False
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.93.0.0/24", "gateway": "10.93.0.254"}]]
    assert conf["plugins"][0]["ipam"]["dataDir"] == "/tmp/y"
    # a whole conflist, as JSON, written as given (after validation)
    full = {"cniVersion": "1.1.0", "name": "jnet", "plugins": [
        {"type": "splice-bridge", "bridge": "jbr0", "ipam": {"type": "splice-ipam", "subnet": "10.92.0.0/24"}}]}
    j = tmp_path / "net.json"
    j.write_text(json.dumps(full))
    c("net", "create", "-f", str(j), check=0)
    assert json.loads((c.config_dir / "jnet.conflist").read_text()) == full
    # a whole conflist in YAML too
    y2 = tmp_path / "full.yml"
    y2.write_text("cniVersion: 1.0.0\nname: ynet\nplugins:\n- type: splice-bridge\n  bridge: ybr1\n"
                  "  ipam: {type: splice-ipam, subnet: 10.91.0.0/24}\n")
    c("net", "create", "-f", str(y2), check=0)
    assert json.loads((c.config_dir / "ynet.conflist").read_text())["plugins"][0]["bridge"] == "ybr1"


@pytest.mark.parametrize("text, needle", [
    ("name: [unclosed\n", "is not valid YAML"),
    ("{\"name\": \"x\",\n", "is not valid YAML"),  # .yaml: YAML, a superset of JSON
    ("- a\n- b\n", "expected a mapping"),
    ("name: x\ndriver: bridge\nsubnet: 10.0.0.0/24\ncolour: blue\n", "unknown key(s) colour"),
    ("name: x\ndriver: bridge\n", "a subnet is required"),
    ("name: x\ndriver: bridge\nsubnet: 10.0.0.0/24\noptions:\n  hairpinMode: maybe\n", "hairpinMode"),
    ("cniVersion: 1.0.0\nname: x\nplugins:\n- type: splice-bridge\n  ipam: {type: splice-ipam}\n", "no IP ranges"),
    ("cniVersion: 1.0.0\nname: x\nplugins: []\n", "non-empty list"),
    ("cniVersion: 1.0.0\nname: x\nplugins:\n- type: splice-portmap\n  backend: iptables\n", "iptables"),
    ("driver: bridge\nsubnet: 10.0.0.0/24\n", "no network name"),
])
def test_bad_files_exit_1(cli_offline, tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = cli_offline("net", "create", "-f", str(f), check=1)
    assert needle in r.err, r.err
    assert not cli_offline.config_dir.exists() or not list(cli_offline.config_dir.iterdir())


def test_missing_file_and_mixed_flags(cli_offline, tmp_path):
    (tmp_path / "n.json").write_text('{"name": "x",')
    r = cli_offline("net", "create", "-f", str(tmp_path / "n.json"), check=1)
    assert "n.json is not valid JSON" in r.err
    r = cli_offline("net", "create", "-f", str(tmp_path / "nope.yaml"), check=1)
    assert "cannot read" in r.err and "nope.yaml" in r.err
    (tmp_path / "n.yaml").write_text("name: n\nsubnet: 10.0.0.0/24\n")
    r = cli_offline("net", "create", "-f", str(tmp_path / "n.yaml"), "--subnet", "10.1.0.0/24", check=2)
    assert "do not go together" in r.err


def test_operations_that_cannot_run_say_why(cli_offline):
    c = cli_offline
    c("net", "create", "web", "--driver", "bridge", "--subnet", "10.97.0.0/24", check=0)
    r = c("attach", "web", "--netns", "spt-does-not-exist", check=1)
    assert "network namespace /run/netns/spt-does-not-exist does not exist" in r.err
    r = c("check", "web", "--netns", "x", check=1)
    assert "no cached result" in r.err and "--cache-dir" in r.err
    r = c("attach", "web", "--netns", "/proc/self/ns/net", "--cni-path", "/nonexistent", locations=False,
          env={"SPLICE_CONFIG_DIR": str(c.config_dir), "SPLICE_CNI_CACHE_DIR": str(c.cache_dir)}, check=1)
    assert "plugin 'splice-bridge' of network 'web' is not in the CNI path /nonexistent" in r.err
    assert "splice install-cni" in r.err
    # ipam ls of a network that never leased anything: an empty listing, not an error
    r = c("ipam", "ls", "web", "--json", check=0)
    assert json.loads(r.out) == []
    # a network whose ipam is not splice's
    (c.config_dir / "hl.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "hl", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.90.0.0/24"}}]}))
    r = c("ipam", "ls", "hl", check=1)
    assert "does not use splice-ipam" in r.err


def test_agent_start_up_imports_no_operator_command(cli_offline):
    """`splice agent` builds only its own arguments: none of the operator modules (nor
    their imports) load on its start-up."""
    import subprocess
    import sys

    code = ("import sys; from splice.plugins.cli.main import parser; parser('agent').parse_args(['agent']); "
            "print(sorted(m for m in sys.modules if m != 'splice.plugins.cli.main' and m.startswith(('splice.plugins.cli.', 'splice.ipam', "
            "'splice.conformance', 'yaml', 'sqlite3'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]", p.stdout


def test_colour_only_on_a_terminal(monkeypatch):
    import io

    from splice.plugins.cli import output

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert output.paint("x", "red", Tty()) == "\x1b[31mx\x1b[0m"
    assert output.paint("x", "red", io.StringIO()) == "x"
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.paint("x", "red", Tty()) == "x"
    s = io.StringIO()
    output.table(["A", "LONGER"], [["aaaa", 1], [None, "b"]], s)
    assert s.getvalue() == "A     LONGER\naaaa  1\n      b\n"


def test_a_broken_conflist_does_not_stop_doctor(cli_offline):
    c = cli_offline
    c("net", "create", "web", "--driver", "bridge", "--subnet", "10.97.0.0/24", "-o", f"ipam.dataDir={c.ipam_dir}",
      check=0)
    (c.config_dir / "bad.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "bad", "plugins": [
        {"type": "splice-bridge", "mtu": "big", "ipam": {"type": "splice-ipam", "subnet": "10.89.0.0/24"}}]}))
    r = c("doctor", "--json", check=1)
    probs = r.json["problems"]
    assert [p["network"] for p in probs] == ["bad"] and "mtu" in probs[0]["problem"]
    assert {n["network"] for n in r.json["networks"]} == {"bad", "web"}
