# tls-privsep — developer entry points. `make test` works on a fresh Debian machine (run as root for apt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the tests drive: real TLS peers, and systemd-analyze / systemd-socket-activate.
SYSPKGS := openssl gnutls-bin curl systemd
SYSBINS := openssl gnutls-cli curl systemd-analyze systemd-socket-activate

.PHONY: venv sysdeps bench-sysdeps test unit integration lint typecheck check run bench bench-engine bench-handoff bench-appphase fuzz-deps fuzz fuzz-smoke clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# A real client that offers X25519MLKEM768 by default (26.0.0 added Connection.get_group_name). --no-deps:
	@# its cap of cryptography < 51 would pin the whole venv to an older cryptography than users get.
	$(PY) -m pip install -q --no-deps 'pyOpenSSL>=26.0.0'
	touch $@

# Install the real TLS peers when missing (needs root; skipped quietly when all are present).
sysdeps:
	@missing=""; for b in $(SYSBINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null; \
	fi

test: venv sysdeps
	$(PY) -m pytest -q

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv sysdeps
	$(PY) -m pytest -q tests/integration

lint: venv
	$(PY) -m ruff check tls_privsep tests fuzz bench

typecheck: venv
	$(PY) -m mypy -p tls_privsep

check: lint typecheck test

# The demo: a self-signed RSA-2048 + ECDSA P-256 pair in .state/, the http backend on 127.0.0.1:8443.
# As root it creates two system users for the daemons (they refuse to keep root).
STATE ?= .state
run: venv
	@$(PY) -m tls_privsep.launcher demo-certs $(STATE) >/dev/null
	@users=""; if [ "$$(id -u)" = 0 ]; then \
	  for u in tls-secured tls-appd; do id -u $$u >/dev/null 2>&1 || \
	    useradd --system --no-create-home --shell /usr/sbin/nologin $$u; done; \
	  users="--secured-user tls-secured --appd-user tls-appd"; fi; \
	exec $(VENV)/bin/tls-privsep run --listen 127.0.0.1:8443 --backend http \
	  --cert $(STATE)/demo-rsa.crt --key $(STATE)/demo-rsa.key \
	  --cert $(STATE)/demo-ecdsa.crt --key $(STATE)/demo-ecdsa.key $$users

# The bench's references beside openssl s_server and trio+ssl: nginx's stream proxy and hitch, from Debian, installed
# when missing. Never fatal: without them (no root, no apt) the bench reports each as missing, with the reason.
bench-sysdeps:
	@missing=""; command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$$missing libnginx-mod-stream"; \
	command -v hitch >/dev/null 2>&1 || missing="$$missing hitch"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the bench's references:$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	    echo "could not install$$missing; the bench will report the references it lacks as missing"; \
	fi

# Our pair against openssl s_server, a trio+ssl server, and for proxied connections nginx and hitch: tables of
# ratios (docs/performance.md). BENCH_QUICK=1 for a short development run; the other BENCH_* knobs are described there.
bench: venv sysdeps bench-sysdeps
	$(PY) -m bench

bench-engine: venv
	$(PY) -m bench.engine

bench-handoff: venv
	$(PY) -m bench.handoff

bench-appphase: venv
	$(PY) tests/bench/appphase.py

# Coverage-guided fuzzing (atheris/libFuzzer) of every parser, FUZZ_SECONDS each; seeds come from real
# handshakes in memory. Findings land in fuzz/findings/<target>/ (see fuzz/README.md). fuzz-smoke is the
# short run .ci/run makes: every target for FUZZ_SMOKE_SECONDS, failing on any finding.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
fuzz-deps: venv
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q 'atheris>=2.3'

fuzz: fuzz-deps
	$(PY) -m fuzz.seeds
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

fuzz-smoke: fuzz-deps
	$(PY) -m fuzz.seeds
	$(PY) -m fuzz.run --seconds $(FUZZ_SMOKE_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
