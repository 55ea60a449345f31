# Varnish in front of the bench origin (127.0.0.1:18080), listening on :18500, for the cache
# scenarios only (/cache/...). Started by bench/run as:
#   varnishd -F -f bench/peers/varnish.vcl -a 127.0.0.1:18500 -n WORKDIR/varnish \
#            -s malloc,1G -p thread_pools=1
# The built-in VCL does the rest: GET responses with Cache-Control max-age are cached, and
# concurrent misses for one object wait for the first (Varnish's request coalescing).
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "18080";
}
