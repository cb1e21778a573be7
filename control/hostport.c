/* HOST:PORT, as every program of the cluster takes it on its command line. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/cmsg.h"

int sl_hostport_parse(const char *s, struct sockaddr_in *out, char *bad, size_t badlen)
{
	const char *colon = strrchr(s, ':');
	char host[64];
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host)) {
		snprintf(bad, badlen, "%s", s);
		return -EINVAL;
	}
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	if (inet_pton(AF_INET, host, &out->sin_addr) != 1) {
		snprintf(bad, badlen, "%s", host);
		return -EINVAL;
	}
	char *end;
	const char *p = colon + 1;
	unsigned long port = strtoul(p, &end, 10);
	if (!*p || *p == '-' || *p == '+' || *end || port < 1 || port > 65535) {
		snprintf(bad, badlen, "%s", p);
		return -EINVAL;
	}
	out->sin_port = htons((uint16_t)port);
	return 0;
}
