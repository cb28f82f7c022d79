// Internals shared by context.cc and session.cc.
#pragma once

#include <openssl/ssl.h>

namespace ringmta::tls::detail {

// SSL ex_data slot holding the tls::session that owns an SSL.
int session_ex_index() noexcept;
// SSL_CTX_sess_set_new_cb: a client received a session (a TLS 1.3 ticket): cache it.
int on_new_client_session(SSL* ssl, SSL_SESSION* session);

}  // namespace ringmta::tls::detail
