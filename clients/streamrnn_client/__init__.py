"""streamrnn's client library: stream audio to a streamrnn daemon over WebSocket or gRPC and get
live transcripts, resuming the session when the connection drops. No torch."""
__version__ = "0.1.0"
