#!/usr/bin/env bash
# Makes the system Postfix a loopback-only SMTP peer for tests/esmtp_postfix.rs:
#   - installs the Debian package postfix ("Local only") if it is missing,
#   - listens on loopback only, logs to /var/log/postfix.log (no syslog daemon on CI),
#   - offers STARTTLS (smtpd_tls_security_level = may) with a self-signed certificate for
#     localhost / 127.0.0.1 at /etc/postfix/postrider-test-cert.pem (tests trust it for verify),
#   - delivers postrider-sink@localhost to /dev/null (an alias), so a test can see status=sent,
#   - and starts (or reloads) Postfix.
# Idempotent: run it as often as you like. Needs root.
set -euo pipefail

CERT=/etc/postfix/postrider-test-cert.pem
KEY=/etc/postfix/postrider-test-key.pem
LOG=/var/log/postfix.log

if ! command -v postconf >/dev/null 2>&1; then
  echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
  echo "postfix postfix/mailname string localhost.localdomain" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
fi
command -v openssl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y openssl

if [ ! -s "$CERT" ] || [ ! -s "$KEY" ] || ! openssl x509 -checkend 86400 -noout -in "$CERT" >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$KEY" -out "$CERT" 2>/dev/null
  chmod 600 "$KEY"
fi

postconf -e \
  "inet_interfaces = loopback-only" \
  "maillog_file = $LOG" \
  "smtpd_tls_security_level = may" \
  "smtpd_tls_cert_file = $CERT" \
  "smtpd_tls_key_file = $KEY" \
  "smtpd_tls_loglevel = 1"

if ! grep -q '^postrider-sink:' /etc/aliases; then
  echo 'postrider-sink: /dev/null' >> /etc/aliases
fi
newaliases

touch "$LOG"
if postfix status >/dev/null 2>&1; then
  postfix reload
else
  /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1 || true
  postfix start
fi

for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then
    echo "postfix: listening on 127.0.0.1:25 (log $LOG, certificate $CERT)"
    exit 0
  fi
  sleep 0.1
done
echo "postfix did not start listening on 127.0.0.1:25; see $LOG" >&2
exit 1
