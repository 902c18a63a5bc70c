#!/usr/bin/env python3
"""Checks perf/rig/trex_vpnlb.py without TRex (run by perf/rig/check.sh).

1. Loads the profile against stand-ins for trex.stl.api whose constructors have the signatures
   of TRex's own (trex_stl_streams.py, trex_stl_packet_builder_scapy.py) and calls get_streams
   the ways TRex's loader does (argparse tunables, old keyword tunables, the loader's rule that
   every get_streams argument has a default).
2. Emulates each stream's field engine (write the client address at the named offset, fix the
   checksums as the instruction says) for its first, middle and last client, checks addresses
   and checksums, writes the frames to a pcap and replays it through vpnlbd with the lab config:
   every frame must be classified as the stream says and forwarded to a gateway.

usage: check_trex.py VPNLBD CONFIG WORKDIR
"""

import collections
import ipaddress
import json
import os
import subprocess
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))


# --- 1. stand-ins for trex.stl.api --------------------------------------------------------------

class _Recorded(object):
    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.__dict__)


class STLVmFlowVar(_Recorded):
    def __init__(self, name, init_value=None, min_value=0, max_value=255, size=4, step=1,
                 op="inc"):
        assert isinstance(name, str) and size in (1, 2, 4, 8) and op in ("inc", "dec", "random")
        self.name, self.min_value, self.max_value, self.size, self.op = (
            name, min_value, max_value, size, op)


class STLVmWrFlowVar(_Recorded):
    def __init__(self, fv_name, pkt_offset, offset_fixup=0, add_val=0, is_big=True):
        assert isinstance(fv_name, str) and isinstance(offset_fixup, int)
        self.fv_name, self.pkt_offset, self.offset_fixup = fv_name, pkt_offset, offset_fixup


class STLVmFixIpv4(_Recorded):
    def __init__(self, offset):
        self.offset = offset


class CTRexVmInsFixHwCs(object):
    L4_TYPE_UDP = 11
    L4_TYPE_TCP = 13


class STLVmFixChecksumHw(_Recorded):
    def __init__(self, l3_offset, l4_offset, l4_type):
        assert l4_type in (CTRexVmInsFixHwCs.L4_TYPE_UDP, CTRexVmInsFixHwCs.L4_TYPE_TCP)
        self.l3_offset, self.l4_offset, self.l4_type = l3_offset, l4_offset, l4_type


class STLScVmRaw(_Recorded):
    def __init__(self, list_of_commands=None, split_by_field=None, cache_size=None):
        self.list_of_commands = list_of_commands or []


class STLPktBuilder(_Recorded):
    def __init__(self, pkt=None, pkt_buffer=None, vm=None, path_relative_to_profile=False,
                 build_raw=False, remove_fcs=True):
        self.pkt, self.vm = pkt, vm


class STLTXCont(_Recorded):
    def __init__(self, pps=None, bps_L1=None, bps_L2=None, percentage=None):
        assert isinstance(pps, (int, float)) and pps > 0
        self.pps = pps


class STLStream(_Recorded):
    def __init__(self, name=None, packet=None, mode=None, enabled=True, self_start=True, isg=0.0,
                 flow_stats=None, next=None, stream_id=None, action_count=0, random_seed=0,
                 mac_src_override_by_pkt=None, mac_dst_override_mode=None, dummy_stream=False,
                 start_paused=False, core_id=-1):
        assert isinstance(mode, STLTXCont) and isinstance(packet, STLPktBuilder)
        self.name, self.packet, self.mode = name, packet, mode


def install_stand_ins():
    api = types.ModuleType("trex.stl.api")
    for cls in (STLVmFlowVar, STLVmWrFlowVar, STLVmFixIpv4, CTRexVmInsFixHwCs,
                STLVmFixChecksumHw, STLScVmRaw, STLPktBuilder, STLTXCont, STLStream):
        setattr(api, cls.__name__, cls)
    trex, stl = types.ModuleType("trex"), types.ModuleType("trex.stl")
    trex.stl, stl.api = stl, api
    sys.modules.update({"trex": trex, "trex.stl": stl, "trex.stl.api": api})


def loader_tunables(profile):
    """TRex's STLProfile.get_module_tunables: every get_streams argument needs a default."""
    func = profile.get_streams
    code = func.__code__
    argc = code.co_argcount
    defaults = func.__defaults__
    assert defaults is None or len(defaults) == argc - 1, \
        "TRex's loader refuses get_streams arguments without defaults"


def check_trex_api(prof):
    failures = []
    profile = prof.register()
    loader_tunables(profile)
    # As trex>start -f ... -t --clients 1000 --ipv6_clients 200 --tls_clients 300 (TRex >= 2.90):
    streams = profile.get_streams(tunables=["--clients", "1000", "--ipv6_clients", "200",
                                            "--tls-clients", "300"], direction=0, port_id=0)
    # As the older -t clients=1000,... (keyword tunables), and the defaults (capgen's):
    old = profile.get_streams(direction=0, port_id=0, clients=1000, ipv6_clients=200,
                              tls_clients=300)
    default = profile.get_streams(tunables=[], direction=0, port_id=0)
    if [s.mode.pps for s in streams] != [s.mode.pps for s in old]:
        failures.append("keyword tunables give other streams than argparse tunables")
    expect_pps = lambda v4, v6, tls: (
        (v4 + v6) * (2 * prof.PPS_HANDSHAKE + prof.PPS_DATA) + tls * (2 * prof.PPS_TLS + prof.PPS_DATA)
        + prof.PPS_KEEPALIVE * ((v4 - v4 // 5) + (v6 - ((v4 + v6 + 1) // 5 - (v4 + 1) // 5))))
    for got, want in ((streams, expect_pps(1000, 200, 300)), (default, expect_pps(20, 5, 5))):
        total = sum(s.mode.pps for s in got)
        if abs(total - want) > 1e-6 * want:
            failures.append("total pps %.3f, expected %.3f" % (total, want))
    names = [s.name for s in streams]
    if len(names) != len(set(names)) or len(names) != 11 + 7:
        failures.append("expected 18 uniquely named streams (11 IPv4, 7 IPv6), got %r" % names)
    for s in streams:
        ins = s.packet.vm.list_of_commands
        var, wr = ins[0], ins[1]
        if not (isinstance(var, STLVmFlowVar) and isinstance(wr, STLVmWrFlowVar)
                and wr.fv_name == var.name):
            failures.append("%s: field engine does not start with a flow var and its write" % s.name)
        if s.name.endswith("-v4") and not (wr.pkt_offset == "IP.src" and wr.offset_fixup == 0):
            failures.append("%s: writes %s+%d" % (s.name, wr.pkt_offset, wr.offset_fixup))
        if s.name.endswith("-v6") and not (wr.pkt_offset == "IPv6.src" and wr.offset_fixup == 12):
            failures.append("%s: writes %s+%d" % (s.name, wr.pkt_offset, wr.offset_fixup))
    v4 = {s.name: s.packet.vm.list_of_commands[0] for s in streams if s.name.endswith("-v4")}
    if (v4["ike-sa-init-v4"].min_value, v4["ike-sa-init-v4"].max_value) != ("198.18.64.1", "198.18.67.232"):
        failures.append("IPv4 IKE clients: %r" % v4["ike-sa-init-v4"])
    if (v4["dtls-small-v4"].min_value, v4["dtls-small-v4"].max_value) != ("198.18.67.233", "198.18.69.20"):
        failures.append("IPv4 TLS clients: %r" % v4["dtls-small-v4"])
    for bad in (["--clients", "16000", "--tls_clients", "1000"], ["--clients", "-1"]):
        try:
            profile.get_streams(tunables=bad)
            failures.append("accepted %r" % bad)
        except ValueError:
            pass
    try:
        profile.get_streams(tunables=[], direction=1)
        failures.append("accepted direction 1")
    except ValueError:
        pass
    print("trex api: %d streams, %.1f pps for 1000+200+300 clients (before -m); %s"
          % (len(streams), sum(s.mode.pps for s in streams), "ok" if not failures else "FAILED"))
    return failures


# --- 2. field engine emulation and replay -------------------------------------------------------

def emulate(prof, entry, value):
    """The frame TRex sends when the flow variable holds `value`."""
    from scapy.all import IP, TCP, UDP, Ether, IPv6
    base = prof.build(entry["kind"], entry["family"], prof.address(entry["family"], entry["first"]),
                      l2=(prof.LAB_ROUTER_MAC, prof.LAB_CLIENT_PORT_MAC))
    raw = bytearray(bytes(base))
    layer, field = entry["write"][0].split(".")
    assert field == "src"
    l3 = IP if layer == "IP" else IPv6
    at = len(raw) - len(bytes(base[l3])) + (12 if l3 is IP else 8) + entry["write"][1]
    if isinstance(value, str):
        value = int(ipaddress.IPv4Address(value))
    raw[at:at + 4] = value.to_bytes(4, "big")
    pkt = Ether(bytes(raw))
    if entry["fix"] in ("ipv4-only", "hw-udp", "hw-tcp") and IP in pkt:
        del pkt[IP].chksum
    if entry["fix"] == "hw-udp":
        del pkt[UDP].chksum
    if entry["fix"] == "hw-tcp":
        del pkt[TCP].chksum
    return bytes(pkt)


def checksum_errors(frame):
    """Which checksums of `frame` are wrong (an IPv4 UDP checksum of 0 means none)."""
    from scapy.all import IP, TCP, UDP, Ether
    errors = []
    for layer in (IP, UDP, TCP):
        pkt = Ether(frame)
        if layer not in pkt:
            continue
        got = pkt[layer].chksum
        if layer is UDP and got == 0 and IP in pkt:
            continue
        del pkt[layer].chksum
        if Ether(bytes(pkt))[layer].chksum != got:
            errors.append(layer.__name__)
    return errors


def check_replay(prof, vpnlbd, config, workdir):
    from scapy.all import IP, Ether, IPv6, PcapWriter, rdpcap
    failures = []
    frames, expect = [], collections.Counter()
    for entry in prof.plan(clients=20, ipv6_clients=5, tls_clients=5):
        lo, hi = entry["var_min"], entry["var_max"]
        ints = [int(ipaddress.IPv4Address(v)) if isinstance(v, str) else v for v in (lo, hi)]
        values = sorted({ints[0], (ints[0] + ints[1]) // 2, ints[1]})
        for v in values:
            value = str(ipaddress.IPv4Address(v)) if isinstance(lo, str) else v
            frame = emulate(prof, entry, value)
            pkt = Ether(frame)
            src = pkt[IP].src if IP in pkt else pkt[IPv6].src
            index = v - prof.CLIENT4_BASE if entry["family"] == 4 else v
            if src != prof.address(entry["family"], index):
                failures.append("%s: source %s, expected %s"
                                % (entry["name"], src, prof.address(entry["family"], index)))
            bad = checksum_errors(frame)
            if bad:
                failures.append("%s from %s: wrong %s checksum" % (entry["name"], src, "/".join(bad)))
            frames.append(frame)
            expect[entry["class"]] += 1
    pcap = os.path.join(workdir, "trex-mix.pcap")
    w = PcapWriter(pcap, linktype=1, sync=True)
    for i, f in enumerate(frames):
        pkt = Ether(f)
        pkt.time = 1700000000 + i * 0.001
        w.write(pkt)
    w.close()
    out = os.path.join(workdir, "out")
    res = subprocess.run([vpnlbd, "replay", "--config", config, "--in", "client=" + pcap,
                          "--out-dir", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    if res.returncode != 0:
        return failures + ["vpnlbd replay failed: %s" % res.stderr.strip()[-2000:]]
    report = json.loads(res.stdout)
    classes = report["counters"]["classes"]
    got = {k: v for k, v in classes.items() if v}
    if got != dict(expect):
        failures.append("classes %r, expected %r" % (got, dict(expect)))
    drops = {k: v for k, v in report["counters"]["drops"].items() if v}
    if drops:
        failures.append("drops: %r" % drops)
    sent = report["ports"]["backend"]["tx_packets"]
    if sent != len(frames):
        failures.append("%d of %d frames forwarded to the gateways" % (sent, len(frames)))
    gateways = {"198.19.0.11", "198.19.0.12", "198.19.0.13",
                "2001:2:0:2::11", "2001:2:0:2::12", "2001:2:0:2::13"}
    for pkt in rdpcap(os.path.join(out, "backend.pcap")):
        dst = pkt[IP].dst if IP in pkt else pkt[IPv6].dst
        if dst not in gateways:
            failures.append("forwarded to %s, not a gateway" % dst)
            break
    print("replay: %d frames from %d streams; classes %s; forwarded %d; %s"
          % (len(frames), len(prof.plan()), json.dumps(got, sort_keys=True), sent,
             "ok" if not failures else "FAILED"))
    return failures


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    vpnlbd, config, workdir = sys.argv[1:]
    install_stand_ins()
    sys.path.insert(0, HERE)
    import trex_vpnlb as prof
    failures = check_trex_api(prof) + check_replay(prof, vpnlbd, config, workdir)
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
