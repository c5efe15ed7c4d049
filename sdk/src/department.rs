//! Department contracts: the error convention every department WIT package follows, and the
//! macro that maps it to and from [`Error`], so a call to another department and a route
//! handler share one error type and the provider's code reaches the client unchanged.
//!
//! A department interface's `error` is a variant with the cases `not-found`, `invalid`,
//! `conflict`, `denied` and `unavailable`, each carrying a
//! `record problem { code: string, detail: string, field: option<string> }`. A contract
//! crate (such as `keel-hr`) generates the interface's bindings and calls
//! [`department_errors!`](crate::department_errors) once per generated module.

use crate::{Error, ErrorKind};

/// The [`Error`] for a department `problem` of class `kind`. A provider that left the code
/// empty (one written without the SDK) gets the class's generic code.
#[doc(hidden)]
pub fn from_problem(kind: ErrorKind, code: String, detail: String, field: Option<String>) -> Error {
    let code = if code.is_empty() { generic_code(kind).to_owned() } else { code };
    let error = Error::new(kind, code, detail);
    match field {
        Some(field) => error.at_field(field),
        None => error,
    }
}

/// An [`Error`] taken apart for a department `problem`: its class, code, detail and field.
#[doc(hidden)]
pub fn into_problem(error: Error) -> (ErrorKind, String, String, Option<String>) {
    (error.kind(), error.code().to_owned(), error.detail().to_owned(), error.field().map(str::to_owned))
}

fn generic_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest | ErrorKind::Invalid => "invalid",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unavailable => "department-unavailable",
        ErrorKind::Internal => "internal",
    }
}

/// Implements `From` both ways between [`Error`] and the `error` variant of a department
/// interface's generated bindings, given the path of the generated interface module (the
/// one holding `Error` and `Problem`).
///
/// Calling a department from a handler is then `directory::get_employee(id)?`, and a
/// provider returns SDK errors with `?`. The mapping keeps the code, detail and field:
///
/// | SDK [`ErrorKind`]          | department case |
/// |----------------------------|-----------------|
/// | `NotFound`                 | `not-found`     |
/// | `BadRequest`, `Invalid`    | `invalid`       |
/// | `Conflict`                 | `conflict`      |
/// | `Forbidden`                | `denied`        |
/// | `Unavailable`, `Internal`  | `unavailable`   |
///
/// (A provider's internal failure is, to its caller, a department that cannot answer.)
#[macro_export]
macro_rules! department_errors {
    ($($interface:ident)::+) => {
        impl ::core::convert::From<$($interface)::+::Error> for $crate::Error {
            fn from(error: $($interface)::+::Error) -> Self {
                use $($interface)::+::Error as E;
                let (kind, problem) = match error {
                    E::NotFound(p) => ($crate::ErrorKind::NotFound, p),
                    E::Invalid(p) => ($crate::ErrorKind::Invalid, p),
                    E::Conflict(p) => ($crate::ErrorKind::Conflict, p),
                    E::Denied(p) => ($crate::ErrorKind::Forbidden, p),
                    E::Unavailable(p) => ($crate::ErrorKind::Unavailable, p),
                };
                $crate::department::from_problem(kind, problem.code, problem.detail, problem.field)
            }
        }

        impl ::core::convert::From<$crate::Error> for $($interface)::+::Error {
            fn from(error: $crate::Error) -> Self {
                use $($interface)::+::Error as E;
                let (kind, code, detail, field) = $crate::department::into_problem(error);
                let problem = $($interface)::+::Problem { code, detail, field };
                match kind {
                    $crate::ErrorKind::NotFound => E::NotFound(problem),
                    $crate::ErrorKind::BadRequest | $crate::ErrorKind::Invalid => E::Invalid(problem),
                    $crate::ErrorKind::Conflict => E::Conflict(problem),
                    $crate::ErrorKind::Forbidden => E::Denied(problem),
                    $crate::ErrorKind::Unavailable | $crate::ErrorKind::Internal => E::Unavailable(problem),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{Error, ErrorKind};

    /// A stand-in for a contract's generated interface module.
    mod directory {
        #[derive(Debug, PartialEq)]
        pub struct Problem {
            pub code: String,
            pub detail: String,
            pub field: Option<String>,
        }
        #[derive(Debug, PartialEq)]
        pub enum Error {
            NotFound(Problem),
            Invalid(Problem),
            Conflict(Problem),
            Denied(Problem),
            Unavailable(Problem),
        }
    }

    crate::department_errors!(self::directory);

    #[test]
    fn sdk_errors_cross_a_department_call_with_code_detail_and_field_intact() {
        let sent = Error::invalid("start-date-in-future", "starts after today").at_field("start_date");
        let wire: directory::Error = sent.clone().into();
        assert_eq!(
            wire,
            directory::Error::Invalid(directory::Problem {
                code: "start-date-in-future".into(),
                detail: "starts after today".into(),
                field: Some("start_date".into()),
            })
        );
        assert_eq!(Error::from(wire), sent);

        for (kind, back) in [
            (ErrorKind::NotFound, ErrorKind::NotFound),
            (ErrorKind::BadRequest, ErrorKind::Invalid),
            (ErrorKind::Conflict, ErrorKind::Conflict),
            (ErrorKind::Forbidden, ErrorKind::Forbidden),
            (ErrorKind::Unavailable, ErrorKind::Unavailable),
            (ErrorKind::Internal, ErrorKind::Unavailable),
        ] {
            let wire: directory::Error = Error::new(kind, "c", "d").into();
            let got = Error::from(wire);
            assert_eq!((got.kind(), got.code(), got.detail()), (back, "c", "d"), "{kind:?}");
        }
    }

    #[test]
    fn a_provider_without_a_code_gets_the_generic_code_of_its_class() {
        let wire = directory::Error::Unavailable(directory::Problem {
            code: String::new(),
            detail: "no provider".into(),
            field: None,
        });
        let got = Error::from(wire);
        assert_eq!((got.kind(), got.code()), (ErrorKind::Unavailable, "department-unavailable"));
    }
}
