/*
 * test_notify.c - the sd_notify datagram (notify.h) to a path and to an abstract socket, and
 * nothing at all without $NOTIFY_SOCKET.
 */
#include "runtime/server/notify.h"

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A datagram socket bound at name (a path, or '@' + an abstract name). */
static int bound(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    cr_assert(fd >= 0);
    cr_assert_eq(
        bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
        0);
    return fd;
}

static void expect(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    cr_assert_gt(n, 0, "a datagram arrived");
    buf[n] = '\0';
    cr_assert_str_eq(buf, want);
}

Test(notify, sends_one_datagram_to_a_path)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/meltemi-notify-%d", (int)getpid());
    unlink(path);
    int fd = bound(path);
    setenv("NOTIFY_SOCKET", path, 1);
    cr_assert_eq(mt_notify("READY=1\nSTATUS=x"), 0);
    expect(fd, "READY=1\nSTATUS=x");
    close(fd);
    unlink(path);
}

Test(notify, sends_to_an_abstract_socket)
{
    char name[64];
    snprintf(name, sizeof name, "@meltemi-notify-%d", (int)getpid());
    int fd = bound(name);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_assert_eq(mt_notify("STOPPING=1"), 0);
    expect(fd, "STOPPING=1");
    close(fd);
}

Test(notify, does_nothing_without_the_variable_and_refuses_a_relative_name)
{
    unsetenv("NOTIFY_SOCKET");
    cr_assert_eq(mt_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/name", 1);
    cr_assert_eq(mt_notify("READY=1"), -1);
    setenv("NOTIFY_SOCKET", "/nonexistent/meltemi.sock", 1);
    cr_assert_eq(mt_notify("READY=1"), -1, "nobody listening: an error, not a crash");
}
