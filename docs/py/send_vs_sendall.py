"""What send() returns, blocking and non-blocking: nothing is lost.

    python3 docs/py/send_vs_sendall.py

A blocking send() of 50 MB to a peer that reads returns 50000000: the
kernel put the caller to sleep until it had taken every byte. A
non-blocking send() to a peer that never reads returns what fitted in the
socket buffers, a few MB; once they are full, send() raises
BlockingIOError. The
bytes it did not take are still in your buffer, not lost: send() says how
many it took, and sendall() is the loop that sends the rest.
"""
import socket
import threading

data = b"x" * 50_000_000
server = socket.create_server(("127.0.0.1", 0))


def reader():  # the peer of the first connection: reads everything
    conn, _ = server.accept()
    while conn.recv(1 << 20):
        pass


threading.Thread(target=reader, daemon=True).start()
a = socket.create_connection(server.getsockname())
print("blocking send returned", a.send(data))

b = socket.create_connection(server.getsockname())  # never accepted, never read
b.setblocking(False)
taken = b.send(data)
print("non-blocking send returned", taken)
try:
    while True:  # what sendall does, without the waiting
        taken += b.send(data[taken:])
except BlockingIOError as e:
    print("then, at", taken, "bytes, send raised", repr(e))
print("not lost, still ours to send:", len(data) - taken, "bytes")
