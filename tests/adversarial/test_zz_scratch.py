import time, socket
import httpx
from tests.e2e.rawhttp import exchange, status_of

def raw(live, data, timeout=5):
    return exchange(live.data_port, data, timeout=timeout)

def test_scratch(live, same_worker):
    print(live.get("adv.test", "/ok").text)
    print(live.get("nb.test", "/ok").text)
    for p in ["/refused", "/blackhole", "/silent", "/reset-early", "/garbage", "/bad-status", "/huge-header", "/redirect", "/clte"]:
        t = time.monotonic()
        try:
            r = live.get("faults.test", p)
            print(p, r.status_code, r.headers, r.content[:200], time.monotonic() - t)
        except Exception as e:
            print(p, "EXC", repr(e), time.monotonic() - t)
    for p in ["/reset-mid", "/drip"]:
        t = time.monotonic()
        try:
            with live.client() as c:
                with c.stream("GET", p, headers={"Host": "faults.test"}) as r:
                    n = 0
                    for chunk in r.iter_raw():
                        n += len(chunk)
            print(p, "clean", r.status_code, n, time.monotonic() - t)
        except Exception as e:
            print(p, "EXC", repr(e), time.monotonic() - t)
    # header limits
    for n in (100, 400, 600):
        req = b"GET /raw/x HTTP/1.1\r\nHost: adv.test\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n)) + b"Connection: close\r\n\r\n"
        print("headers", n, raw(live, req)[:60])
    for size in (8000, 17000, 70000):
        req = b"GET /raw/x HTTP/1.1\r\nHost: adv.test\r\nX-Big: " + b"a"*size + b"\r\nConnection: close\r\n\r\n"
        print("bighdr", size, raw(live, req)[:60])
    for size in (8000, 9000, 17000, 70000):
        req = b"GET /raw/" + b"a"*size + b" HTTP/1.1\r\nHost: adv.test\r\nConnection: close\r\n\r\n"
        print("path", size, raw(live, req)[:60])
    req = b"GET /raw/x HTTP/1.1\r\nHost: adv.test\r\nX-Fold: a\r\n b\r\nConnection: close\r\n\r\n"
    print("fold", raw(live, req)[-400:])
    print(live.log_text()[-3000:])
