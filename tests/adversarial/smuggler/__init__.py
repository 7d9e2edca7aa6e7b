"""defparam/smuggler's desync scan, run against a live gateway.

smuggler (https://github.com/defparam/smuggler, MIT, Evan Custodio; vendored at commit
2be871e) sends, for every header mutation of a payload configuration, two requests whose
outcome differs when a front end and a back end disagree on where a body ends:

- TECL: `Content-Length: 6` with the body `0\\r\\n\\r\\nX`: a front end that honours the mutated
  Transfer-Encoding forwards 5 bytes, and a back end that honours Content-Length waits for the
  sixth; a timeout, confirmed by a normal answer with `Content-Length: 5`, is a finding.
- CLTE: `Content-Length: 4` with the body `1\\r\\nZ\\r\\n0\\r\\n\\r\\n`: a front end honouring
  Content-Length forwards `1\\r\\nZ`, a back end honouring Transfer-Encoding waits for the next
  chunk; a timeout confirmed by a normal answer with `Content-Length: 11` is a finding.

`upstream/` holds smuggler's own files unchanged: `Payload.py` (its payload class) and the
three payload configurations `configs/default.py`, `configs/doubles.py`,
`configs/exhaustive.py`, executed here exactly as smuggler executes them. `runner.py` ports
smuggler's detection (`Desyncr._test`, `_check_tecl`, `_check_clte`, `_create_exec_test`),
runs the probes in parallel on loopback, and also records what smuggler does not judge: the
status of every answer, so a 500 (or a hang, or a connection dropped without an answer)
counts against the gateway too. Vendoring only the payload files keeps the scan faithful
without taking smuggler's command line, colour output and file writing into the tree.
"""
