"""moto's server, answering one request at a time.

moto's in-memory backends are not safe under concurrent requests: a DynamoDB transaction
deep-copies whole tables to roll back (and fails with "dictionary changed size during
iteration" when another thread writes meanwhile, or restores a copy over a concurrent write).
Real DynamoDB serialises conflicting writes; so does this server, while its clients still send
many requests at once over kept-alive connections. Arguments are moto.server's.
"""

import threading

import moto.server as server

_Dispatcher = server.DomainDispatcherApplication


class OneRequestAtATime(_Dispatcher):  # type: ignore[misc, valid-type]
    _lock = threading.Lock()

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        with self._lock:
            # The body is produced inside the lock too.
            return list(super().__call__(environ, start_response))


server.DomainDispatcherApplication = OneRequestAtATime

if __name__ == "__main__":
    server.main()
