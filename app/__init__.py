"""DSV Studio: the Streamlit front end of dsvlib (entry point: ``streamlit run app/main.py``)."""
