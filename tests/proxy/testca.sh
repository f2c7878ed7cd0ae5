# A CA made by a test, and server certificates it signs (openssl(1)), so a
# test checks TLS verification against a CA it controls. Source with bash.
#   test_ca DIR            -> DIR/ca.crt, DIR/ca.key
#   test_cert DIR FILE CN SAN -> DIR/FILE.crt, DIR/FILE.key (SAN: "IP:1.2.3.4,DNS:x")
# NGINX checks a tunnel name that is an IP address against the certificate's
# subject CN (X509_check_host), so give the address as CN too.
# shellcheck shell=bash
test_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=czctl test CA $RANDOM" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
}
test_cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$1/$2.key" -out "$1/$2.csr" 2>/dev/null &&
  openssl x509 -req -in "$1/$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$4") -out "$1/$2.crt" 2>/dev/null
}
