# Loaded with PERL5OPT=-MSluiceT to run memcached's own t/ suite against a
# running Sluice node. T_MEMD_USE_DAEMON=host:port already points the TCP
# side at any server; this makes UDP sockets go to the same host and port
# (the stock harness assumes 127.0.0.1 and a UDP port of its own choosing).
package SluiceT;
use strict;
use warnings;
use IO::Socket::INET;

require MemcachedTest;

my ($host, $port) = ($ENV{T_MEMD_USE_DAEMON} || '') =~ m/^([^:]+):(\d+)$/;

no warnings 'redefine';
# No memcached-debug binary here: describe a plain 1.6 server (no TLS, SASL,
# extstore, proxy or unix sockets) to the feature probes.
*MemcachedTest::get_memcached_exe = sub { return '/bin/true' };
*MemcachedTest::print_help = sub { return "memcached 1.6.18 (Sluice)\n-U, --udp-port\n" };
*Memcached::Handle::new_udp_sock = sub {
    return IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'udp');
};
my $orig_new = \&MemcachedTest::new_memcached;
*MemcachedTest::new_memcached = sub {
    my $h = $orig_new->(@_);
    $h->{udpport} = $port if $h;
    return $h;
};
*main::new_memcached = \&MemcachedTest::new_memcached if defined &main::new_memcached;
1;
