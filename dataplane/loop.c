/*
 * The main lcore's loop: every file descriptor it serves (TCP listeners and
 * connections today; the control channel and timers next) is registered
 * with a handler, and every turn also runs the pollers, the work no
 * descriptor announces (replies coming back by ring, the exception port,
 * table reclamation).
 *
 * The main lcore shares a CPU with a worker in small set-ups, so it must
 * not wake for nothing: when no poller has work coming it blocks in
 * epoll, which a socket wakes at once.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "sluiced.h"

int sl_loop_init(struct sl_loop *l)
{
	l->pollers = NULL;
	l->can_block = true;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -errno : 0;
}

void sl_loop_fini(struct sl_loop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
}

int sl_loop_add(struct sl_loop *l, int fd, uint32_t events, struct sl_fd_handler *h)
{
	struct epoll_event e = {.events = events, .data.ptr = h};
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) == 0 ? 0 : -errno;
}

int sl_loop_mod(struct sl_loop *l, int fd, uint32_t events, struct sl_fd_handler *h)
{
	struct epoll_event e = {.events = events, .data.ptr = h};
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &e) == 0 ? 0 : -errno;
}

void sl_loop_del(struct sl_loop *l, int fd)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void sl_loop_add_poller(struct sl_loop *l, struct sl_poller *p)
{
	p->next = l->pollers;
	l->pollers = p;
}

bool sl_loop_turn(struct sl_loop *l, int wait_ms, bool *waited)
{
	bool busy = false, no_wait = !l->can_block;
	l->wait_cap_ms = -1;
	for (struct sl_poller *p = l->pollers; p; p = p->next)
		busy |= p->poll(p, &no_wait);
	if (l->wait_cap_ms >= 0 && wait_ms > l->wait_cap_ms)
		wait_ms = l->wait_cap_ms;
	struct epoll_event ev[64];
	*waited = wait_ms > 0 && !busy && !no_wait;
	int n = epoll_wait(l->epfd, ev, 64, *waited ? wait_ms : 0);
	for (int i = 0; i < n; i++) {
		struct sl_fd_handler *h = ev[i].data.ptr;
		h->ready(h, ev[i].events);
	}
	return busy || n > 0;
}
