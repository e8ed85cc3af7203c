/*
 * auth.h — who is asking, and may they (auth.c).
 */
#ifndef TAKO_AUTH_H
#define TAKO_AUTH_H

#include <event2/http.h>
#include <stdbool.h>

struct request_auth {
    bool ok;    /* a configured key was presented */
    bool admin; /* it is the admin key */
    char key_id[17];
};
/* Who the request being handled is (valid during a handler call; copy it for later). */
extern struct request_auth current_auth;
void auth_init(void);
bool auth_enabled(void);
/* The key id whose jobs this request may see, or NULL when it may see all (admin, or no
 * authentication configured). */
const char *auth_owner(void);
/* Rate limit, then authentication (unless open_route). false: it has replied (429/401). */
bool auth_gate(struct evhttp_request *req, const char *corr, bool open_route);

#endif
