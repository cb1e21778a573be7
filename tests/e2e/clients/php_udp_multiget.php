<?php
// php-memcache (pecl memcache, Debian php-memcache) with a UDP port: sets go
// over TCP, gets over UDP, and the client checks that every reply datagram
// carries the next sequence number. A message split wrongly shows up as a
// "UDP packet loss" notice; the test fails on any notice.
set_error_handler(function ($no, $str) { fwrite(STDOUT, "NOTICE: $str\n"); return true; });
$host = $argv[1];
$port = (int)$argv[2];
$m = new MemcachePool();
$m->addServer($host, $port, $port);
$keys = array();
for ($i = 0; $i < 50; $i++) {
    $keys[] = "php$i";
    if (!$m->set("php$i", str_repeat(chr(65 + $i % 26), 100 + $i * 40), 0, 0)) {
        echo "set failed\n";
        exit(1);
    }
}
$got = $m->get($keys);
$ok = 0;
foreach ($keys as $i => $k)
    if (isset($got[$k]) && $got[$k] === str_repeat(chr(65 + $i % 26), 100 + $i * 40))
        $ok++;
echo "multi-get ok=$ok\n";
echo "single=", $m->get("php3") === str_repeat("D", 220) ? "ok" : "bad", "\n";
echo "miss=", $m->get("nope") === false ? "ok" : "bad", "\n";
