//! What the phases read of a request head ([`Head`]), whichever parser read it: hyper's
//! `http::Request` on the general path, or `h1::request::RequestHead`, parsed in place, on the
//! HTTP/1 fast path. The admit and route phases are written once, against this, so both paths
//! run the same checks in the same order.

use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::h1::request::RequestHead;

/// A request head as the phases read it.
pub trait Head {
    /// The method.
    fn method(&self) -> &Method;
    /// The request target.
    fn uri(&self) -> &Uri;
    /// The protocol version.
    fn version(&self) -> Version;
    /// The values of every line named `name`, in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
    /// How many lines are named `name`.
    fn count(&self, name: &HeaderName) -> usize {
        self.values(name).count()
    }
    /// The value of the first line named `name`.
    fn first<'a>(&'a self, name: &'a HeaderName) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl<B> Head for Request<B> {
    fn method(&self) -> &Method {
        Request::method(self)
    }

    fn uri(&self) -> &Uri {
        Request::uri(self)
    }

    fn version(&self) -> Version {
        Request::version(self)
    }

    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers().get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl Head for RequestHead<'_> {
    fn method(&self) -> &Method {
        &self.method
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn version(&self) -> Version {
        self.version.as_http()
    }

    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.get_all(name.as_str())
    }
}
