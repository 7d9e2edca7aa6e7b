"""What a backend registration that leaves a field out gets: one definition for the model, the
API, the data plane's snapshot and the simulator."""

CONNECT_TIMEOUT_MS = 2_000  # connecting to a backend; a retry may then try another one
READ_TIMEOUT_MS = 30_000  # time to the first response byte, and between body chunks
WEIGHT = 1
