/*
 * sluiced: one Sluice node.
 *
 *   sluiced [EAL options] -- [--ip ADDR/PREFIX] [--udp-port N] [--tcp HOST:PORT|off]
 *           [--memory MiB] [--workers N] [--max-item-size BYTES] [--port N]
 *           [--exception-port N --exception-netns NAME] [--busy-poll]
 *
 * Start-up follows DPDK's examples (rte_exit only while starting, a
 * force-quit flag set by SIGINT/SIGTERM, rte_eal_cleanup at the end).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "sluice/fault.h"
#include "sluice/portguard.h"
#include "sluiced.h"

struct sl_config {
	uint16_t port;
	int exc_port; /* -1: no exception path */
	char exc_netns[64];
	uint32_t ip; /* network order */
	uint8_t prefix;
	uint16_t udp_port;
	char tcp_host[64];
	uint16_t tcp_port;
	bool tcp_on;
	size_t mem_mib;
	unsigned workers;
	size_t max_item;
	bool busy_poll; /* workers never sleep when idle (dedicated cores) */
	bool verbose;
	unsigned table_swap_ms; /* test builds: publish a new table this often */
	unsigned tcp_inflight;  /* admission bound of the TCP front end */
	struct sl_udpguard_conf guard;
	bool trust_given;
	bool cluster;
	bool have_key;
	unsigned fwd_timeout_ms;
	struct sl_repl_conf repl;
	bool repl_lag_given;
	int cluster_dev; /* -1: node-to-node traffic on the dataplane port */
	struct sl_cluster_conf cl;
};

/* The node: everything main() sets up, owned by the main lcore. */
struct sl_app {
	struct sl_config cfg;
	struct sl_net net;
	struct sl_handoff ho;
	struct sl_tables tables;
	struct sl_loop loop;
	struct sl_tcp tcp;
	struct sl_cluster cluster;
	struct sl_poller exc_poller;
	struct sl_poller table_poller;
	uint64_t next_swap_ns;
	struct sl_worker workers[SL_MAX_WORKERS];
	struct sl_node node;
	struct sl_core_stats main_st; /* main lcore's own counters */
	volatile bool quit;
};

static volatile bool *quit_flag;

static void usage(const char *prog)
{
	fprintf(
	    stderr,
	    "usage: %s [EAL options] -- [options]\n"
	    "  --ip ADDR/PREFIX        dataplane IPv4 address (required)\n"
	    "  --udp-port N            memcached UDP port (default 11211)\n"
	    "  --tcp HOST:PORT|off     extra TCP listener (default 127.0.0.1:11211)\n"
	    "  --memory MiB            item memory, like memcached -m (default 64)\n"
	    "  --workers N             worker cores (default: all worker lcores)\n"
	    "  --max-item-size BYTES   largest item (default 1048576)\n"
	    "  --port N                DPDK port of the dataplane (default 0)\n"
	    "  --exception-port N      DPDK tap port towards the kernel (TCP, ARP, ...)\n"
	    "  --exception-netns NAME  move the exception tap into this netns, give it\n"
	    "                          the dataplane address and listen on TCP there\n"
	    "  --busy-poll             workers poll without ever sleeping when idle\n"
	    "                          (dedicated cores: no wake-up delay after a lull)\n"
	    "  --tcp-max-inflight N    TCP conversations with the workers at once, 1-%u\n"
	    "                          (default %u); more wait, unread, in their sockets\n"
	    "  --udp-trust P[,P...]    UDP sources answered without limit (default: the\n"
	    "                          prefix of --ip)\n"
	    "  --udp-allow P[,P...]|any  UDP sources answered within a budget (default:\n"
	    "                          none; every other source is dropped unanswered)\n"
	    "  --udp-amp-factor N      allowed sources: bytes sent per byte received (10)\n"
	    "  --udp-max-reply BYTES   allowed sources: largest reply, and the burst\n"
	    "                          allowance (16384); larger: use TCP\n"
	    "  --controller HOST:PORT[,HOST:PORT...]  join the cluster of this\n"
	    "                          sluice-control (several: the etcd-backed ones)\n"
	    "  --cluster-key-file FILE the cluster key (64 hex digits, mode 600)\n"
	    "  --name NAME             this node's name in the cluster (default: its address)\n"
	    "  --weight N              its capacity, 1-255 (default 1)\n"
	    "  --heartbeat-ms N        heartbeat interval to the controller (default 50)\n"
	    "  --cluster-port N        UDP port of node-to-node traffic on the fast path\n"
	    "                          (default 21211: the client port + 10000)\n"
	    "  --cluster-dev N         a DPDK port of its own for node-to-node traffic\n"
	    "                          (default: the dataplane port)\n"
	    "  --forward-timeout-ms N  a request forwarded to its slot's node that gets\n"
	    "                          no answer this long is answered SERVER_ERROR (200)\n"
	    "  --repl-log-bytes N      each replication stream's log of changes not yet\n"
	    "                          acknowledged by the backup (8388608); a backup that\n"
	    "                          falls further behind is resynced\n"
	    "  --repl-max-lag-ms N     a primary whose oldest change not acknowledged by\n"
	    "                          its backup is older refuses writes (500; 0: never)\n"
	    "  --resync-rate MBPS      ceiling on a resync's snapshot, MB/s (0: none)\n"
	    "%s",
	    prog, SL_TCP_INFLIGHT, SL_TCP_INFLIGHT,
	    SL_FAULTS_BUILT
	        ? "  --test-table-swap-ms N  (test builds) publish a new slot table every N ms\n"
	        : "");
}

/* A whole number in [min, max] for option @p opt, or a message naming it. */
static int num_arg(const char *opt, const char *s, unsigned long min, unsigned long max,
                   unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *s == '-' || *s == '+' || *end || errno || v < min || v > max) {
		fprintf(stderr, "sluiced: --%s: '%s' is not a whole number from %lu to %lu\n", opt,
		        s, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

/* HOST:PORT for option @p opt, or a message quoting the part that is wrong. */
static int hostport_arg(const char *opt, const char *s, struct sockaddr_in *out)
{
	char bad[128];
	if (sl_hostport_parse(s, out, bad, sizeof(bad)) == 0)
		return 0;
	fprintf(stderr, "sluiced: --%s: '%s' is wrong in '%s' (want A.B.C.D:PORT, port 1-65535)\n",
	        opt, bad, s);
	return -1;
}

/* A network namespace or interface name: what ip(8) and the kernel accept
 * as a name, and nothing a command line could read otherwise. */
static bool safe_name(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || s[0] == '-' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static int parse_args(struct sl_config *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"ip", required_argument, NULL, 'i'},
	    {"udp-port", required_argument, NULL, 'u'},
	    {"tcp", required_argument, NULL, 't'},
	    {"memory", required_argument, NULL, 'm'},
	    {"workers", required_argument, NULL, 'w'},
	    {"max-item-size", required_argument, NULL, 'I'},
	    {"port", required_argument, NULL, 'p'},
	    {"exception-port", required_argument, NULL, 'e'},
	    {"exception-netns", required_argument, NULL, 'n'},
	    {"busy-poll", no_argument, NULL, 'b'},
	    {"tcp-max-inflight", required_argument, NULL, 'F'},
	    {"udp-trust", required_argument, NULL, 'T'},
	    {"udp-allow", required_argument, NULL, 'A'},
	    {"udp-amp-factor", required_argument, NULL, 'X'},
	    {"udp-max-reply", required_argument, NULL, 'R'},
	    {"controller", required_argument, NULL, 'C'},
	    {"cluster-key-file", required_argument, NULL, 'K'},
	    {"name", required_argument, NULL, 'N'},
	    {"weight", required_argument, NULL, 'W'},
	    {"heartbeat-ms", required_argument, NULL, 'H'},
	    {"cluster-port", required_argument, NULL, 'P'},
	    {"cluster-dev", required_argument, NULL, 'D'},
	    {"forward-timeout-ms", required_argument, NULL, 'O'},
	    {"repl-log-bytes", required_argument, NULL, 'R' + 256},
	    {"repl-max-lag-ms", required_argument, NULL, 'L' + 256},
	    {"resync-rate", required_argument, NULL, 'Y' + 256},
	    {"verbose", no_argument, NULL, 'v'},
	    {"test-table-swap-ms", required_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	unsigned long v;
	bool have_ip = false;
	c->udp_port = 11211;
	c->tcp_on = true;
	snprintf(c->tcp_host, sizeof(c->tcp_host), "127.0.0.1");
	c->tcp_port = 11211;
	c->mem_mib = 64;
	c->max_item = 1024 * 1024;
	c->exc_port = -1;
	c->cluster_dev = -1;
	c->guard.factor = 10;
	c->guard.max_reply = 16384;
	optind = 1;
	opterr = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'i': {
			char buf[64];
			snprintf(buf, sizeof(buf), "%s", optarg);
			char *slash = strchr(buf, '/');
			c->prefix = 24;
			if (slash) {
				*slash = 0;
				if (num_arg("ip (prefix length)", slash + 1, 1, 32, &v))
					return -1;
				c->prefix = (uint8_t)v;
			}
			struct in_addr ia;
			if (inet_pton(AF_INET, buf, &ia) != 1) {
				fprintf(stderr, "sluiced: --ip: '%s' is not an IPv4 address\n",
				        buf);
				return -1;
			}
			c->ip = ia.s_addr;
			have_ip = true;
			break;
		}
		case 'u':
			if (num_arg("udp-port", optarg, 1, 65535, &v))
				return -1;
			c->udp_port = (uint16_t)v;
			break;
		case 't': {
			if (strcmp(optarg, "off") == 0) {
				c->tcp_on = false;
				break;
			}
			struct sockaddr_in sa;
			if (hostport_arg("tcp", optarg, &sa))
				return -1;
			inet_ntop(AF_INET, &sa.sin_addr, c->tcp_host, sizeof(c->tcp_host));
			c->tcp_port = ntohs(sa.sin_port);
			break;
		}
		case 'm':
			if (num_arg("memory", optarg, 1, 1024 * 1024, &v))
				return -1;
			c->mem_mib = (size_t)v;
			break;
		case 'w':
			if (num_arg("workers", optarg, 1, SL_MAX_WORKERS, &v))
				return -1;
			c->workers = (unsigned)v;
			break;
		case 'I':
			if (num_arg("max-item-size", optarg, 1024, 128UL * 1024 * 1024, &v))
				return -1;
			c->max_item = (size_t)v;
			break;
		case 'p':
			if (num_arg("port", optarg, 0, RTE_MAX_ETHPORTS - 1, &v))
				return -1;
			c->port = (uint16_t)v;
			break;
		case 'e':
			if (num_arg("exception-port", optarg, 0, RTE_MAX_ETHPORTS - 1, &v))
				return -1;
			c->exc_port = (int)v;
			break;
		case 'n':
			if (!safe_name(optarg, sizeof(c->exc_netns) - 1)) {
				fprintf(stderr,
				        "sluiced: --exception-netns: '%s' is not a namespace name "
				        "(letters, digits, '_', '-', '.'; at most %zu)\n",
				        optarg, sizeof(c->exc_netns) - 1);
				return -1;
			}
			snprintf(c->exc_netns, sizeof(c->exc_netns), "%s", optarg);
			break;
		case 'b':
			c->busy_poll = true;
			break;
		case 'F':
			if (num_arg("tcp-max-inflight", optarg, 1, SL_TCP_INFLIGHT, &v))
				return -1;
			c->tcp_inflight = (unsigned)v;
			break;
		case 'T':
		case 'A':
			if (sl_prefixes_parse(o == 'T' ? &c->guard.trust : &c->guard.allow, optarg,
			                      o == 'A') != 0) {
				fprintf(stderr,
				        "sluiced: --udp-%s: '%s' is not a list of A.B.C.D/N "
				        "prefixes%s\n",
				        o == 'T' ? "trust" : "allow", optarg,
				        o == 'A' ? " or any" : "");
				return -1;
			}
			c->trust_given |= o == 'T';
			break;
		case 'C':
			for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save)) {
				if (c->cl.ncontrollers == SL_MAX_CONTROLLERS) {
					fprintf(stderr, "sluiced: --controller: at most %u\n",
					        SL_MAX_CONTROLLERS);
					return -1;
				}
				if (hostport_arg("controller", tok,
				                 &c->cl.controller[c->cl.ncontrollers++]))
					return -1;
			}
			c->cluster = true;
			break;
		case 'K': {
			const char *why;
			if (sl_cmsg_read_key(optarg, c->cl.key, &why) != 0) {
				fprintf(stderr, "sluiced: --cluster-key-file: %s: %s\n", optarg,
				        why);
				return -1;
			}
			c->have_key = true;
			break;
		}
		case 'N':
			if (!safe_name(optarg, 62)) {
				fprintf(stderr,
				        "sluiced: --name: '%s' is not a node name (letters, "
				        "digits, '_', '-', '.')\n",
				        optarg);
				return -1;
			}
			snprintf(c->cl.name, 63, "%s", optarg);
			break;
		case 'W':
			if (num_arg("weight", optarg, 1, 255, &v))
				return -1;
			c->cl.weight = (uint8_t)v;
			break;
		case 'H':
			if (num_arg("heartbeat-ms", optarg, 1, 60000, &v))
				return -1;
			c->cl.heartbeat_ms = (unsigned)v;
			break;
		case 'D':
			if (num_arg("cluster-dev", optarg, 0, RTE_MAX_ETHPORTS - 1, &v))
				return -1;
			c->cluster_dev = (int)v;
			break;
		case 'P':
			if (num_arg("cluster-port", optarg, 1, 65535, &v))
				return -1;
			c->cl.cport = (uint16_t)v;
			break;
		case 'O':
			if (num_arg("forward-timeout-ms", optarg, 1, 60000, &v))
				return -1;
			c->fwd_timeout_ms = (unsigned)v;
			break;
		case 'R' + 256:
			if (num_arg("repl-log-bytes", optarg, 65536, 1ul << 34, &v))
				return -1;
			c->repl.log_bytes = v;
			break;
		case 'L' + 256:
			if (num_arg("repl-max-lag-ms", optarg, 0, 3600000, &v))
				return -1;
			c->repl.max_lag_ms = (uint32_t)v;
			c->repl_lag_given = true;
			break;
		case 'Y' + 256:
			if (num_arg("resync-rate", optarg, 0, 1000000, &v))
				return -1;
			c->repl.resync_bps = (uint64_t)v * 1000000;
			break;
		case 'X':
			if (num_arg("udp-amp-factor", optarg, 1, 1000, &v))
				return -1;
			c->guard.factor = (uint32_t)v;
			break;
		case 'R':
			if (num_arg("udp-max-reply", optarg, 64, 16UL << 20, &v))
				return -1;
			c->guard.max_reply = (uint32_t)v;
			break;
		case 'v':
			c->verbose = true;
			break;
		case 'S':
			if (!SL_FAULTS_BUILT) {
				fprintf(stderr,
				        "sluiced: --test-table-swap-ms: only in test builds "
				        "(meson -Dfaults=true)\n");
				return -1;
			}
			if (num_arg("test-table-swap-ms", optarg, 1, 60000, &v))
				return -1;
			c->table_swap_ms = (unsigned)v;
			break;
		default:
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!have_ip)
		fprintf(stderr, "sluiced: --ip is required\n");
	if (c->cluster && !c->have_key) {
		fprintf(stderr, "sluiced: --controller needs --cluster-key-file\n");
		return -1;
	}
	if (!c->cl.weight)
		c->cl.weight = 1;
	if (have_ip && !c->cl.name[0])
		inet_ntop(AF_INET, &c->ip, c->cl.name, 63); /* by default named by address */
	c->cl.ip = c->ip;
	c->cl.port = c->udp_port;
	if (!c->cl.cport)
		c->cl.cport = (uint16_t)(c->udp_port + 10000u > 65535 ? c->udp_port - 10000u
	                                                              : c->udp_port + 10000u);
	if (c->cl.cport == c->udp_port) {
		fprintf(stderr, "sluiced: --cluster-port must differ from --udp-port\n");
		return -1;
	}
	if (!c->fwd_timeout_ms)
		c->fwd_timeout_ms = 200;
	if (!c->repl.log_bytes)
		c->repl.log_bytes = 8u << 20;
	if (!c->repl_lag_given)
		c->repl.max_lag_ms = 500;
	if (have_ip && !c->trust_given) {
		/* by default only the node's own network is trusted */
		char own[INET_ADDRSTRLEN + 4];
		inet_ntop(AF_INET, &c->ip, own, INET_ADDRSTRLEN);
		snprintf(own + strlen(own), 4, "/%u", c->prefix % 33);
		sl_prefixes_parse(&c->guard.trust, own, false);
	}
	if (c->exc_netns[0] && c->exc_port < 0) {
		fprintf(stderr, "sluiced: --exception-netns needs --exception-port\n");
		return -1;
	}
	return have_ip ? 0 : -1;
}

static void on_signal(int sig)
{
	(void)sig;
	if (quit_flag)
		*quit_flag = true;
}

static int port_init(struct sl_app *a, uint16_t port, uint16_t nrx, uint16_t ntx)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf = {0};
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc)
		return rc;
	if (nrx > info.max_rx_queues || ntx > info.max_tx_queues) {
		fprintf(stderr, "sluiced: port %u has %u rx / %u tx queues, need %u / %u\n", port,
		        info.max_rx_queues, info.max_tx_queues, nrx, ntx);
		return -EINVAL;
	}
	/* Spread requests over the workers' queues in hardware where the port
	 * can; any that land on the wrong core are handed over in software. */
	if (nrx > 1 && info.flow_type_rss_offloads) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf =
		    (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
	}
	rc = rte_eth_dev_configure(port, nrx, ntx, &conf);
	if (rc)
		return rc;
	uint16_t nb_rxd = 1024, nb_txd = 1024;
	rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
	for (uint16_t q = 0; q < nrx; q++) {
		rc = rte_eth_rx_queue_setup(port, q, nb_rxd, rte_eth_dev_socket_id(port), NULL,
		                            a->net.pktpool);
		if (rc)
			return rc;
	}
	for (uint16_t q = 0; q < ntx; q++) {
		rc = rte_eth_tx_queue_setup(port, q, nb_txd, rte_eth_dev_socket_id(port), NULL);
		if (rc)
			return rc;
	}
	rc = rte_eth_dev_start(port);
	if (rc)
		return rc;
	rte_eth_promiscuous_enable(port);
	return 0;
}

/*
 * Run ip(8) with @p argv, without a shell: the names in it are checked
 * (safe_name) and passed as separate arguments, never as a command line
 * that a shell would read.
 */
static int run_ip(char *const argv[])
{
	static const char *const paths[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
	const char *ip = NULL;
	for (size_t i = 0; i < RTE_DIM(paths) && !ip; i++)
		if (access(paths[i], X_OK) == 0)
			ip = paths[i];
	if (!ip) {
		fprintf(stderr, "sluiced: ip(8) not found (package iproute2)\n");
		return -ENOENT;
	}
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
		execve(ip, argv, envp);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "sluiced: '%s", ip);
		for (int i = 1; argv[i]; i++)
			fprintf(stderr, " %s", argv[i]);
		fprintf(stderr, "' failed\n");
		return -EIO;
	}
	return 0;
}

/*
 * The exception path: a tap whose kernel side carries the node's own MAC
 * and address, in a namespace of its own (so the kernel does not treat
 * local traffic as loopback). Traffic that is not fast-path UDP is passed
 * to it; what the kernel sends is put on the wire by the main lcore.
 */
static int exception_init(struct sl_app *a)
{
	struct sl_config *c = &a->cfg;
	int rc = port_init(a, (uint16_t)c->exc_port, 1, 1);
	if (rc)
		return rc;
	rte_eth_dev_default_mac_addr_set((uint16_t)c->exc_port, &a->net.mac);
	if (!c->exc_netns[0])
		return 0;
	struct rte_eth_dev_info info;
	char ifname[IF_NAMESIZE] = "";
	if (rte_eth_dev_info_get((uint16_t)c->exc_port, &info) != 0 || !info.if_index ||
	    !if_indextoname(info.if_index, ifname) || !safe_name(ifname, IF_NAMESIZE - 1)) {
		fprintf(stderr, "sluiced: exception port has no kernel interface\n");
		return -ENODEV;
	}
	char path[128];
	struct stat sb;
	snprintf(path, sizeof(path), "/var/run/netns/%s", c->exc_netns);
	if (stat(path, &sb) != 0) {
		fprintf(stderr, "sluiced: --exception-netns: no namespace %s (ip netns add %s)\n",
		        c->exc_netns, c->exc_netns);
		return -ENOENT;
	}
	char ip[INET_ADDRSTRLEN + 5];
	inet_ntop(AF_INET, &c->ip, ip, INET_ADDRSTRLEN);
	snprintf(ip + strlen(ip), 5, "/%u", c->prefix);
	char *ns = c->exc_netns;
	char *mv[] = {"ip", "link", "set", "dev", ifname, "netns", ns, NULL};
	char *addr[] = {"ip", "-n", ns, "addr", "add", ip, "dev", ifname, NULL};
	char *up[] = {"ip", "-n", ns, "link", "set", "dev", ifname, "up", NULL};
	char *lo[] = {"ip", "-n", ns, "link", "set", "dev", "lo", "up", NULL};
	if (run_ip(mv) || run_ip(addr) || run_ip(up) || run_ip(lo))
		return -EIO;
	return 0;
}

/* Move packets between the exception tap and the wire (a poller of the
 * main loop: a DPDK port announces nothing to epoll). */
static bool exception_poll(struct sl_poller *p, bool *no_wait)
{
	struct sl_app *a = (struct sl_app *)((char *)p - offsetof(struct sl_app, exc_poller));
	struct rte_mbuf *pk[SL_BURST];
	bool busy = false;
	(void)no_wait;
	unsigned n = rte_ring_sc_dequeue_burst(a->net.exc_ring, (void **)pk, SL_BURST, NULL);
	if (n) {
		uint16_t s = rte_eth_tx_burst((uint16_t)a->cfg.exc_port, 0, pk, (uint16_t)n);
		if (s < n) {
			a->main_st.drops[SL_DROP_tx_full] += n - s;
			rte_pktmbuf_free_bulk(pk + s, n - s);
		}
		busy = true;
	}
	uint16_t k = rte_eth_rx_burst((uint16_t)a->cfg.exc_port, 0, pk, SL_BURST);
	if (k) {
		unsigned s = rte_ring_sp_enqueue_burst(a->net.wire_ring, (void **)pk, k, NULL);
		a->main_st.exception_pkts += k;
		if (s < k) {
			a->main_st.drops[SL_DROP_tx_full] += k - s;
			rte_pktmbuf_free_bulk(pk + s, k - s);
		}
		busy = true;
	}
	return busy;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Slot tables: reclaim the ones no worker can still read. In test builds
 * with --test-table-swap-ms, also publish a fresh copy of the current
 * table under the next epoch that often, so that the tests run the
 * publication and reclamation under load (the same ownership: replies must
 * not change).
 */
static bool table_poll(struct sl_poller *p, bool *no_wait)
{
	struct sl_app *a = (struct sl_app *)((char *)p - offsetof(struct sl_app, table_poller));
	struct sl_tables *ts = &a->tables;
	bool busy = false;
	if (ts->nretired) {
		sl_tables_reclaim(ts);
		*no_wait = true; /* come back soon for the rest */
	}
	if (a->cfg.table_swap_ms) {
		*no_wait = true;
		uint64_t now = mono_ns();
		if (now >= a->next_swap_ns) {
			a->next_swap_ns = now + (uint64_t)a->cfg.table_swap_ms * 1000000u;
			struct sl_table *t = sl_table_alloc();
			if (t) {
				memcpy(t, sl_tables_current(ts), sizeof(*t));
				t->epoch++;
				if (sl_tables_publish(ts, t) == 0)
					a->node.epoch = t->epoch;
				else
					sl_table_free(t);
				busy = true;
			}
		}
	}
	return busy;
}

int main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		rte_exit(EXIT_FAILURE, "EAL init failed\n");
	argc -= ret;
	argv += ret;

	static struct sl_app app;
	struct sl_app *a = &app;
	if (parse_args(&a->cfg, argc, argv) != 0) {
		usage("sluiced");
		rte_exit(EXIT_FAILURE, "bad arguments\n");
	}
	struct sl_config *c = &a->cfg;
	unsigned avail = rte_lcore_count() - 1;
	if (avail == 0)
		rte_exit(EXIT_FAILURE,
		         "need at least 2 lcores (main + 1 worker), e.g. --lcores 0@0,1@1\n");
	if (c->workers == 0)
		c->workers = avail;
	if (c->workers > avail)
		rte_exit(EXIT_FAILURE, "--workers %u but only %u worker lcores\n", c->workers,
		         avail);
	if (!rte_eth_dev_is_valid_port(c->port))
		rte_exit(EXIT_FAILURE, "no DPDK port %u (give one with --vdev)\n", c->port);
	if (c->exc_port >= 0 && !rte_eth_dev_is_valid_port((uint16_t)c->exc_port))
		rte_exit(EXIT_FAILURE, "no exception port %d\n", c->exc_port);
	quit_flag = &a->quit;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	unsigned W = c->workers;
	struct sl_net *net = &a->net;
	net->port = c->port;
	net->exc_port = c->exc_port;
	net->ip = c->ip;
	net->udp_port = c->udp_port;
	net->ho = &a->ho;
	net->guard = c->guard;
	net->pktpool = rte_pktmbuf_pool_create("sl_pkt", 16383 + 4096 * W, 256, 0,
	                                       RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (c->exc_port >= 0) {
		net->exc_ring =
		    rte_ring_create("sl_exc", SL_RING_SIZE, (int)rte_socket_id(), RING_F_SC_DEQ);
		net->wire_ring = rte_ring_create("sl_wire", SL_RING_SIZE, (int)rte_socket_id(),
		                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!net->exc_ring || !net->wire_ring)
			rte_exit(EXIT_FAILURE, "cannot create rings: %s\n",
			         rte_strerror(rte_errno));
	}
	if (!net->pktpool || sl_handoff_init(&a->ho, W) != 0)
		rte_exit(EXIT_FAILURE, "cannot create pools: %s\n", rte_strerror(rte_errno));

	if (port_init(a, c->port, (uint16_t)W, (uint16_t)W) != 0)
		rte_exit(EXIT_FAILURE, "cannot start port %u\n", c->port);
	rte_eth_macaddr_get(c->port, &net->mac);
	net->cdev = -1;
	if (c->cluster && c->cluster_dev >= 0 && c->cluster_dev != c->port) {
		/* node-to-node datagrams on a link of their own */
		if (!rte_eth_dev_is_valid_port((uint16_t)c->cluster_dev) ||
		    port_init(a, (uint16_t)c->cluster_dev, (uint16_t)W, (uint16_t)W) != 0)
			rte_exit(EXIT_FAILURE, "cannot start the cluster port %d\n", c->cluster_dev);
		net->cdev = c->cluster_dev;
	}
	if (c->cluster) {
		/* node to node traffic, on the fast path (fwd.c) */
		net->cport = rte_cpu_to_be_16(c->cl.cport);
		net->fwd_timeout_ms = c->fwd_timeout_ms;
		net->repl = c->repl;
		memcpy(net->key, c->cl.key, SL_CMSG_KEY);
		memcpy(c->cl.mac, net->mac.addr_bytes, 6);
	}
	if (c->exc_port >= 0 && exception_init(a) != 0)
		rte_exit(EXIT_FAILURE, "cannot set up the exception path\n");

	/* before any worker polls a port or reads a table (see
	 * include/sluice/portguard.h and tables.c) */
	if (sl_guard_init(W) != 0)
		rte_exit(EXIT_FAILURE, "cannot set up the port guard\n");
	/* the node runs alone: node 0, epoch 1, every slot its own; in a
	 * cluster it serves nothing before the controller's first table (an
	 * empty node answering for slots another node holds would give
	 * misses for keys that exist) */
	struct sl_table *t0 = sl_table_alloc();
	if (!t0 || sl_table_init_local(t0, 1, 0, W) != 0)
		rte_exit(EXIT_FAILURE, "cannot build the slot table\n");
	if (c->cluster) {
		for (unsigned s = 0; s < SL_SLOTS; s++) {
			t0->state[s] = SL_SLOT_REMOTE;
			t0->node[s] = 0xfffe; /* nobody it knows: "not served" */
		}
	}
	if (sl_table_seal(t0) != 0 || sl_tables_publish(&a->tables, t0) != 0)
		rte_exit(EXIT_FAILURE, "cannot build the slot table\n");

	/* the node: W stores, each with its share of memory */
	a->node.nworkers = W;
	a->node.epoch = t0->epoch;
	a->node.main_st = &a->main_st;
	a->node.started = sl_now();
	a->node.mem_limit = c->mem_mib << 20;
	a->node.max_item = c->max_item;
	a->node.repl_stats = sl_repl_stats;
	a->node.udp_port = c->udp_port;
	a->node.tcp_port = c->tcp_on ? c->tcp_port : 0;
	unsigned lc = rte_get_next_lcore(-1, 1, 0);
	for (unsigned i = 0; i < W; i++, lc = rte_get_next_lcore(lc, 1, 0)) {
		struct sl_worker *w = &a->workers[i];
		struct sl_store_conf sc = {.mem_limit = a->node.mem_limit / W,
		                           .max_item_size = c->max_item,
		                           .arena = SL_STORE_NEW_ARENA};
		w->idx = i;
		w->lcore = lc;
		w->net = net;
		w->ho = &a->ho;
		w->tables = &a->tables;
		w->quit = &a->quit;
		w->busy_poll = c->busy_poll;
		w->tx.port = c->port;
		w->ctx.port = net->cdev >= 0 ? (uint16_t)net->cdev : c->port;
		w->ctx.queue = (uint16_t)i;
		w->ctx.patient = true;
		w->ctx.st = &w->ex.st;
		w->tx.queue = (uint16_t)i;
		w->tx.st = &w->ex.st;
		w->ex.core = i;
		w->ex.node = &a->node;
		w->ex.table = t0;
		w->ex.store = sl_store_create(&sc);
		if (!w->ex.store)
			rte_exit(EXIT_FAILURE, "cannot create store %u\n", i);
		sl_store_set_cas_tag(w->ex.store, SL_CAS_TAG(0, i)); /* node 0 until registered */
		w->ex.udp = sl_udpguard_create(&c->guard, 4096);
		if (!w->ex.udp)
			rte_exit(EXIT_FAILURE, "cannot create the UDP guard %u\n", i);
		a->node.cores[i] = &w->ex;
		uint64_t hz = rte_get_tsc_hz();
		w->frag = rte_ip_frag_table_create(1024, 16, 4096, hz, (int)rte_socket_id());
		if (!w->frag)
			rte_exit(EXIT_FAILURE, "cannot create reassembly table\n");
		if (sl_fwd_init(w) != 0)
			rte_exit(EXIT_FAILURE, "cannot create the forwarding state %u\n", i);
		if (sl_repl_init(w) != 0)
			rte_exit(EXIT_FAILURE, "cannot create the replication state %u\n", i);
	}
	if (sl_loop_init(&a->loop) != 0)
		rte_exit(EXIT_FAILURE, "cannot create the main loop\n");
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &c->ip, ip, sizeof(ip));
	struct sl_tcp_conf tc = {.on = c->tcp_on,
	                         .port = c->tcp_port,
	                         .exc_netns =
	                             c->exc_port >= 0 && c->exc_netns[0] ? c->exc_netns : NULL,
	                         .exc_ip = c->ip,
	                         .exc_port = c->udp_port,
	                         .max_inflight = c->tcp_inflight};
	snprintf(tc.host, sizeof(tc.host), "%s", c->tcp_host);
	if (sl_tcp_init(&a->tcp, &tc, &a->loop, &a->ho, &a->node, &a->main_st, c->max_item) != 0)
		rte_exit(EXIT_FAILURE, "cannot start the TCP front end\n");
	if (c->cluster && sl_cluster_init(&a->cluster, &c->cl, &a->loop, &a->tables, &a->node) != 0)
		rte_exit(EXIT_FAILURE, "cannot set up the control channel\n");
	a->table_poller.poll = table_poll;
	sl_loop_add_poller(&a->loop, &a->table_poller);
	if (c->exc_port >= 0) {
		/* a DPDK port: the loop polls it and never blocks in epoll */
		a->exc_poller.poll = exception_poll;
		sl_loop_add_poller(&a->loop, &a->exc_poller);
		a->loop.can_block = false;
	}

	printf("sluiced: %s/%u udp port %u, %u worker(s), %zu MiB, mac " RTE_ETHER_ADDR_PRT_FMT
	       "\n",
	       ip, c->prefix, c->udp_port, W, c->mem_mib, RTE_ETHER_ADDR_BYTES(&net->mac));
	if (c->tcp_on)
		printf("sluiced: tcp on %s:%u\n", c->tcp_host, c->tcp_port);
	printf("sluiced: udp trusts %u prefix(es), allows %s\n", c->guard.trust.n,
	       c->guard.allow.any ? "any source"
	       : c->guard.allow.n ? "listed prefixes"
	                          : "no other");
	if (c->exc_netns[0])
		printf("sluiced: tcp on %s:%u in netns %s (exception path)\n", ip, c->udp_port,
		       c->exc_netns);
	printf("sluiced: ready\n");
	fflush(stdout);

	for (unsigned i = 0; i < W; i++)
		rte_eal_remote_launch(sl_worker_main, &a->workers[i], a->workers[i].lcore);

	/*
	 * The main lcore shares a CPU with a worker in small set-ups (the
	 * benchmarks give it the worker's), so it must not wake for nothing:
	 * every wake-up takes the CPU from the worker for two context
	 * switches. Once idle, it waits in epoll for its descriptors, which
	 * wake it at once; only the exception port, a DPDK port no file
	 * descriptor announces, needs polling, every SL_MAX_IDLE_US at most.
	 * Measured (get100 uniform, 1 worker sharing CPU 0, 3 rounds): waking
	 * every 1 ms cost 5% of throughput, 3.43 vs 3.60 Mops/s.
	 */
	unsigned idle = 0, sleep_us = 1;
	while (!a->quit) {
		bool waited;
		bool busy = sl_loop_turn(&a->loop, idle >= 64 ? SL_MAIN_WAIT_MS : 0, &waited);
		if (busy) {
			idle = 0;
			sleep_us = 1;
			continue;
		}
		/* Not spinning while a worker has a conversation: sharing its
		 * CPU, a spinning main lcore would keep the worker from
		 * running for milliseconds (measured: 7.8 ms per request). */
		if (++idle < 64 || waited)
			continue;
		usleep(sleep_us);
		if (sleep_us < SL_MAX_IDLE_US)
			sleep_us *= 2;
	}
	printf("sluiced: shutting down\n");
	rte_eal_mp_wait_lcore();
	sl_tcp_fini(&a->tcp);
	if (c->cluster)
		sl_cluster_fini(&a->cluster);
	sl_loop_fini(&a->loop);
	sl_handoff_fini(&a->ho);
	void *objs[SL_BURST];
	unsigned n;
	struct rte_ring *pk[] = {net->exc_ring, net->wire_ring};
	for (unsigned r = 0; r < 2; r++)
		while (pk[r] && (n = rte_ring_dequeue_burst(pk[r], objs, SL_BURST, NULL)))
			rte_pktmbuf_free_bulk((struct rte_mbuf **)objs, n);
	for (unsigned i = 0; i < W; i++) {
		sl_store_destroy(a->workers[i].ex.store);
		sl_udpguard_destroy(a->workers[i].ex.udp);
		rte_ip_frag_table_destroy(a->workers[i].frag);
	}
	sl_tables_fini(&a->tables);
	rte_eth_dev_stop(c->port);
	rte_eth_dev_close(c->port);
	if (a->net.cdev >= 0) {
		rte_eth_dev_stop((uint16_t)a->net.cdev);
		rte_eth_dev_close((uint16_t)a->net.cdev);
	}
	if (c->exc_port >= 0) {
		rte_eth_dev_stop((uint16_t)c->exc_port);
		rte_eth_dev_close((uint16_t)c->exc_port);
	}
	rte_eal_cleanup();
	return 0;
}
