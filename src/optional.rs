//! A layer that may be turned off without boxing: both branches answer with
//! an `Either` body, so a stack keeps one concrete type whichever layers are
//! on, and nothing is allocated per call to make that so.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// `Some(layer)` applies it, `None` passes requests straight through.
#[derive(Debug, Clone)]
pub(crate) struct Optional<L>(pub(crate) Option<L>);

impl<L, S> Layer<S> for Optional<L>
where
    L: Layer<S>,
{
    type Service = OptionalService<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(l) => OptionalService::On(l.layer(inner)),
            None => OptionalService::Off(inner),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum OptionalService<A, B> {
    On(A),
    Off(B),
}

impl<A, B, Req, BA, BB> Service<Req> for OptionalService<A, B>
where
    A: Service<Req, Response = http::Response<BA>>,
    A::Error: Into<BoxError>,
    B: Service<Req, Response = http::Response<BB>>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<EitherBody<BA, BB>>;
    type Error = BoxError;
    type Future = OptionalFuture<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::On(a) => a.poll_ready(cx).map_err(Into::into),
            Self::Off(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Self::On(a) => OptionalFuture::On { f: a.call(req) },
            Self::Off(b) => OptionalFuture::Off { f: b.call(req) },
        }
    }
}

pin_project! {
    #[project = OptionalFutureProj]
    pub(crate) enum OptionalFuture<FA, FB> {
        On { #[pin] f: FA },
        Off { #[pin] f: FB },
    }
}

impl<FA, FB, BA, BB, EA, EB> Future for OptionalFuture<FA, FB>
where
    FA: Future<Output = Result<http::Response<BA>, EA>>,
    FB: Future<Output = Result<http::Response<BB>, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<http::Response<EitherBody<BA, BB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OptionalFutureProj::On { f } => f.poll(cx).map(|r| {
                r.map(|res| res.map(|b| EitherBody::A { b }))
                    .map_err(Into::into)
            }),
            OptionalFutureProj::Off { f } => f.poll(cx).map(|r| {
                r.map(|res| res.map(|b| EitherBody::B { b }))
                    .map_err(Into::into)
            }),
        }
    }
}

pin_project! {
    #[project = EitherBodyProj]
    pub(crate) enum EitherBody<A, B> {
        A { #[pin] b: A },
        B { #[pin] b: B },
    }
}

impl<A, B> Body for EitherBody<A, B>
where
    A: Body<Data = Bytes>,
    A::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            EitherBodyProj::A { b } => b.poll_frame(cx).map(|o| o.map(|r| r.map_err(Into::into))),
            EitherBodyProj::B { b } => b.poll_frame(cx).map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::A { b } => b.is_end_stream(),
            Self::B { b } => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::A { b } => b.size_hint(),
            Self::B { b } => b.size_hint(),
        }
    }
}
