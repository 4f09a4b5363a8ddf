set -e
mkdir -p /root/parts /tmp/payload
cp .device/p*/part* /root/parts/ 2>/dev/null || true
cat /root/parts/part* | xz -d | tar -C /tmp/payload -xf -
rm -rf /tmp/site && mv /tmp/payload/site /tmp/site
for w in /tmp/payload/*.whl; do python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w" 2>/dev/null; done
echo unpacked: $(ls /tmp/site | tr '\n' ' ')
