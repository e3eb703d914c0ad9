"""The verifier sandbox: a stdlib-only supervisor process and the wire protocol it speaks."""
