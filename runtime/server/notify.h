/*
 * notify.h - tells the service manager (systemd, Type=notify) where meltemi stands:
 *   READY=1       every worker serves the configuration (what makes /ready answer 200)
 *   RELOADING=1   a reload began (SIGHUP, POST /reload, the directory changed); READY=1 follows
 *   STOPPING=1    the drain began
 * A no-op unless $NOTIFY_SOCKET is set.
 */
#ifndef MELTEMI_SERVER_NOTIFY_H
#define MELTEMI_SERVER_NOTIFY_H

/* Sends state ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET. Returns 0 (also when unset) or -1. */
int mt_notify(const char *state);

#endif
