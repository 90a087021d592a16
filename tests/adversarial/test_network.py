"""A variant reaching the network: a TCP connection to a listener on this machine."""
import socket
import threading

from tests.adversarial.harness import attack_source, namespaces_or_skip, run

CONNECT = """
import socket
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=5) as connection:
        connection.sendall(b"leaked")
        print("connected", flush=True)
except OSError:
    pass
"""


def test_a_variant_has_no_network(spec):
    namespaces_or_skip()
    received = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except OSError:
                    continue
                with connection:
                    received.append(connection.recv(100))

        listener = threading.Thread(target=accept, daemon=True)
        listener.start()
        result = run(attack_source(before_finish=CONNECT.format(port=server.getsockname()[1])), spec)
        stop.set()
        listener.join()
    assert received == [] and "connected" not in result.log_tail
