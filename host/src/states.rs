//! Closed sets of states stored as text (`jobs.status`, `tenants.status`, ...): one enum
//! each, so a typo is a compile error instead of a query that matches nothing, and the
//! OpenAPI document lists the values.

/// Defines an enum whose variants are stored, serialized and documented as the given names,
/// with `as_str`, `parse`, `ALL`, `names()` (for error messages) and `Display`.
macro_rules! text_states {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] #[schema(rename = $text)] $variant),+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and serialized name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The state of that name.
            pub fn parse(text: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|state| state.as_str() == text)
            }

            /// Every name, comma-separated.
            pub fn names() -> String {
                Self::ALL.iter().map(|state| state.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
