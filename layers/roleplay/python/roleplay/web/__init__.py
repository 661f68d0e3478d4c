"""What every function's HTTP app shares: the app factory, the response envelope, sign-in,
anonymous clients, CORS, offline docs and health."""
