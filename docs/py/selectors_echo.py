"""The lessons' selectors server, reading 16 bytes per event on purpose.

    python3 docs/py/selectors_echo.py 127.0.0.1 7011
    strace -e trace=epoll_ctl,epoll_wait,recvfrom python3 docs/py/selectors_echo.py 127.0.0.1 7011

On Linux, selectors.DefaultSelector is an EpollSelector, and it registers
level-triggered (EPOLLIN, no EPOLLET): a socket with bytes left is reported
again by the next select(), so reading 16 bytes per event loses nothing, it
only costs another wake-up. mio registers edge-triggered; see docs/GUIDE.md,
section 2, for the same 16-byte reads losing the rest in Rust.
"""
import selectors
import socket
import sys

sel = selectors.DefaultSelector()


def accept(server):
    conn, _ = server.accept()
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, echo)


def echo(conn):
    data = conn.recv(16)  # less than the message: the rest stays in the kernel
    if data:
        conn.send(data.upper())  # small replies: the send buffer has room
    else:
        sel.unregister(conn)
        conn.close()


host, port = sys.argv[1], int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
server.listen(5)
server.setblocking(False)
sel.register(server, selectors.EVENT_READ, accept)
print(f"listening on tcp://{host}:{server.getsockname()[1]}", flush=True)
while True:
    for key, _ in sel.select():
        key.data(key.fileobj)
