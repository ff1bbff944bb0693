"""labcore.runtime.dns without root: the resolv.conf a container gets, answers built from the containers' names, the
world's names forwarded, and the server's thread answering on UDP and TCP (on the host's loopback here; in a
container's namespace in tests/privileged/test_networks.py)."""
import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from labcore.runtime import dns as labdns

NAMES = {"web": ["10.203.1.2"], "db": ["10.203.1.3", "10.203.2.3"]}


def query(name: str, kind: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, kind)


def test_resolv_conf_points_at_the_embedded_server_with_the_hosts_search_domains(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.53\nsearch lab.example\noptions edns0\n")
    text = labdns.resolv_conf(str(host))
    assert "nameserver 127.0.0.11\n" in text and "search lab.example\n" in text and "options ndots:0\n" in text
    assert "192.0.2.53" not in text
    assert labdns.upstream_servers(str(host)) == ["192.0.2.53"]
    assert labdns.upstream_servers(str(tmp_path / "missing")) == []


def test_a_containers_name_gets_its_addresses_with_dockers_ttl():
    reply = dns.message.from_wire(labdns.answer(query("web").to_wire(), NAMES))
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.QR and reply.flags & dns.flags.RA
    (records,) = reply.answer
    assert [r.address for r in records] == ["10.203.1.2"] and records.ttl == 600
    both = dns.message.from_wire(labdns.answer(query("DB.").to_wire(), NAMES))     # case and the final dot
    assert sorted(r.address for r in both.answer[0]) == ["10.203.1.3", "10.203.2.3"]


def test_a_known_name_asked_for_ipv6_is_an_empty_answer_not_nxdomain():
    reply = dns.message.from_wire(labdns.answer(query("web", "AAAA").to_wire(), NAMES))
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []


@pytest.mark.parametrize("wire", [query("example.org").to_wire(), b"\x00garbage", b""])
def test_an_unknown_name_or_an_unreadable_query_goes_upstream(wire):
    assert labdns.answer(wire, NAMES) is None


def serve_once(reply: bytes):
    """A nameserver on 127.0.0.1 that answers one query with ``reply`` (its id replaced by the query's)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def answer():
        data, client = server.recvfrom(512)
        server.sendto(data[:2] + reply[2:], client)
        server.close()
    threading.Thread(target=answer, daemon=True).start()
    return server.getsockname()[1]


def test_the_worlds_names_are_forwarded_to_the_hosts_nameservers():
    upstream = dns.message.make_response(query("example.org"))
    upstream.answer.append(dns.rrset.from_text("example.org.", 60, "IN", "A", "192.0.2.7"))
    port = serve_once(upstream.to_wire())
    asked = query("example.org")
    reply = dns.message.from_wire(labdns.forward(asked.to_wire(), ["127.0.0.1"], port))
    assert reply.id == asked.id and reply.answer[0][0].address == "192.0.2.7"


def test_no_upstream_answering_is_servfail(monkeypatch):
    monkeypatch.setattr(labdns, "UPSTREAM_TIMEOUT", 0.2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        reply = labdns.forward(query("example.org").to_wire(), ["127.0.0.1"], silent.getsockname()[1])
    assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    assert labdns.failure(b"junk") is None


def test_the_resolver_thread_answers_on_udp_and_tcp_and_reads_the_names_at_each_query():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.create_server(("127.0.0.1", 0))
    names = {"web": ["10.203.1.2"]}
    resolver = labdns.Resolver(udp, tcp, lambda: dict(names), servers=[]).start()
    try:
        assert str(resolver) == (f"127.0.0.11:53 -> udp 127.0.0.1:{udp.getsockname()[1]}, "
                                 f"tcp 127.0.0.1:{tcp.getsockname()[1]}")
        import dns.query
        answered = dns.query.udp(query("web"), "127.0.0.1", port=udp.getsockname()[1], timeout=5)
        assert answered.answer[0][0].address == "10.203.1.2"
        names["web"] = ["10.203.1.9"]                          # a container came back with another address
        over_tcp = dns.query.tcp(query("web"), "127.0.0.1", port=tcp.getsockname()[1], timeout=5)
        assert over_tcp.answer[0][0].address == "10.203.1.9"
        unknown = dns.query.udp(query("example.org"), "127.0.0.1", port=udp.getsockname()[1], timeout=5)
        assert unknown.rcode() == dns.rcode.SERVFAIL          # no upstream at all
    finally:
        resolver.stop()
    assert not resolver.thread.is_alive() and udp.fileno() == -1 and tcp.fileno() == -1


def test_the_redirect_names_both_ports():
    rules = labdns.REDIRECT.format(address=labdns.ADDRESS, udp=40001, tcp=40002)
    assert "udp dport 53 dnat to 127.0.0.11:40001" in rules and "tcp dport 53 dnat to 127.0.0.11:40002" in rules
