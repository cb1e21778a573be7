/* The cluster key file: 64 hexadecimal digits (32 bytes), white space around
 * them ignored; readable by its owner only, as a secret should be. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sluice/cmsg.h"

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sl_cmsg_read_key(const char *path, uint8_t key[SL_CMSG_KEY], const char **why)
{
	struct stat st;
	FILE *f = fopen(path, "r");
	if (!f) {
		*why = strerror(errno);
		return -errno;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
		fclose(f);
		*why = "readable by others (chmod 600 it)";
		return -EPERM;
	}
	char buf[256];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = buf;
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	for (int i = 0; i < SL_CMSG_KEY; i++) {
		int hi = hexval(p[2 * i]), lo = hi < 0 ? -1 : hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			*why = "not 64 hexadecimal digits";
			return -EINVAL;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	p += 2 * SL_CMSG_KEY;
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	if (*p) {
		*why = "not 64 hexadecimal digits";
		return -EINVAL;
	}
	return 0;
}
